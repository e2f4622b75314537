-- The format (json, ndjson or csv) of the request that a refused record came
-- in, so that replaying it reads it by that grammar again (a CSV cell "5" is
-- an integer, a JSON string "5" is not). Records refused before this column
-- existed have none and are replayed as JSON.
ALTER TABLE rejected_records ADD COLUMN format text;
