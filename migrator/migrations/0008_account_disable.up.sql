-- An administrator's lock: unlike the failed-login lockout (locked_until), which only holds back
-- logins from unknown sources, it refuses every login until it ends or is lifted.
ALTER TABLE users ADD COLUMN disabled_until timestamptz;
