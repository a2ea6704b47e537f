DROP TABLE email_verification_tokens;
DROP TABLE password_reset_tokens;
