\set r random(1, 2000000000)
WITH k AS (
  INSERT INTO event_claims (key, day)
  VALUES (imggo_event_key('pgb-' || :client_id || '-' || :r, 'job.succeeded'),
          date_trunc('day', now(), 'UTC'))
  ON CONFLICT DO NOTHING RETURNING key)
INSERT INTO webhook_events (job_id, event, key_id, nonce, ciphertext)
SELECT 'pgb-' || :client_id || '-' || :r, 'job.succeeded', 'k', '\x00', decode(repeat('ab', 1600), 'hex') FROM k;
