\set r random(1, 2000000000)
WITH k AS (
  INSERT INTO event_keys (key, since)
  VALUES (imggo_event_key('pgb-' || :client_id || '-' || :r, 'job.succeeded'),
          date_bin('28 days', now(), '1970-01-05 00:00:00+00'))
  ON CONFLICT DO NOTHING RETURNING key)
INSERT INTO webhook_events (job_id, event, key_id, nonce, ciphertext)
SELECT 'pgb-' || :client_id || '-' || :r, 'job.succeeded', 'k', '\x00', decode(repeat('ab', 1600), 'hex') FROM k;
