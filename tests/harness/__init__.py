"""Test harness for imapcalfs: a private Dovecot with a test CA, sample
mail, and helpers that mount the filesystem and read it with real tools."""
