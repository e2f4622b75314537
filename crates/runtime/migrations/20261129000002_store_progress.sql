-- The read API's progress on each records stream: every message up to
-- ack_floor is acknowledged for good. Its applied_messages rows can then go,
-- and a store consumer made anew (after it was lost) starts after it rather
-- than replaying messages whose applied rows are gone.
CREATE TABLE store_progress (
    stream text PRIMARY KEY,
    ack_floor bigint NOT NULL
);
