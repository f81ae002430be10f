-- The seed's migration 20250729100000_add_user_preferences (timestamptz, updated_at by trigger)
-- and its data migration: preferences for every user who has none.

CREATE TABLE user_preferences (
    id            TEXT NOT NULL DEFAULT gen_random_uuid()::text,
    user_id       TEXT NOT NULL,
    theme         TEXT DEFAULT 'light',
    language      TEXT DEFAULT 'en',
    notifications BOOLEAN DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT user_preferences_pkey PRIMARY KEY (id)
);

CREATE UNIQUE INDEX user_preferences_user_id_key ON user_preferences(user_id);

ALTER TABLE user_preferences ADD CONSTRAINT user_preferences_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE ON UPDATE CASCADE;

CREATE TRIGGER user_preferences_updated_at BEFORE UPDATE ON user_preferences
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Data migration (the seed's migrateUserPreferences), in one statement.
INSERT INTO user_preferences (user_id, theme, language, notifications)
SELECT u.id, 'light', 'en', true
  FROM users u
 WHERE NOT EXISTS (SELECT 1 FROM user_preferences p WHERE p.user_id = u.id);
