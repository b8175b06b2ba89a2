-- Several auth instances dispatch one outbox: a dispatcher claims a row (claimed_until, Unix
-- seconds) before handing it to the sender, so no other instance sends it meanwhile; a claim
-- left by an instance that died mid-send expires and the mail is sent again.
ALTER TABLE auth_schema.outbox ADD COLUMN claimed_until INTEGER;
