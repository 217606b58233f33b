-- The feed watcher no longer listens: each replica's insert path wakes its
-- own watcher, and while anyone waits the watcher reads the head every
-- 50 ms for other replicas' commits. A NOTIFY at every commit of an insert
-- serialised the commits of every notifying transaction in the cluster on
-- one lock and cost 10-20 % of Postgres' CPU per delivery. A replica of an
-- older release still LISTENs: its long-polls wake on its 500 ms timer.
DROP TRIGGER webhook_events_notify ON webhook_events;
DROP FUNCTION imggo_events_notify();
