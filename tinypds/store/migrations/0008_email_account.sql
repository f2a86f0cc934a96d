-- 0008: the account's email confirmation and planned deletion (issue 14).
-- Email tokens (confirm_email, update_email, reset_password, delete_account) reuse
-- action_tokens from 0004: one outstanding token per (did, purpose), stored as a hash only.

-- When the current email was confirmed (ISO 8601 UTC); NULL = not confirmed. Changing the
-- email clears it.
ALTER TABLE account ADD COLUMN email_confirmed_at TEXT;

-- deactivateAccount's deleteAfter (ISO 8601), kept for the owner to see; NULL = none.
ALTER TABLE account ADD COLUMN delete_after TEXT;
