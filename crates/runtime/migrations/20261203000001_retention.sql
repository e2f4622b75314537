-- How long a connector keeps its records and rejected records, in seconds;
-- NULL keeps them forever. The read API's maintenance drops the records
-- tables' partitions that are older, and deletes older rejected records.
ALTER TABLE connectors ADD COLUMN retention_seconds bigint CHECK (retention_seconds > 0);

-- Rejected records past retention are deleted in batches, oldest first.
-- (Built once, on upgrade; it holds up storing rejected records, never
-- reading them, while it builds.)
CREATE INDEX rejected_records_received_at ON rejected_records (connector_id, received_at);
