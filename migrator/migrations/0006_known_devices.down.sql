DROP INDEX sessions_user_created_idx;
DROP TABLE known_devices;
