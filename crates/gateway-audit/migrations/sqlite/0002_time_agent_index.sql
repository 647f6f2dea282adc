-- Agent lookups go through the time index instead of an index of their own.
--
-- An index keyed by agent first takes each commit's rows at one place per distinct agent, so a
-- batch from 64 agents dirtied about 64 index pages, each written whole to the WAL and fsynced:
-- with that index, one successful action's trail (six records) sustained 5.7k actions/s at 64
-- agents, against 16k/s without it (benches/gateway.rs, baseline_audit_trail). Keyed by time
-- first, new entries land at the index's end like every other index here. Questions about an
-- agent ("what did agent X do between T1 and T2") read the time range from this index, agent
-- included, without touching the table; for a whole history, a range of days does the same.
DROP INDEX IF EXISTS audit_records_agent;
DROP INDEX IF EXISTS audit_records_time;
CREATE INDEX IF NOT EXISTS audit_records_time_agent ON audit_records (event_time, agent_id);
