"""The shared vocabulary every other folder speaks: the catalog and presets (config), a round's records and
outcomes, the page's texts in both languages, refusals, text checks and redaction. Imports nothing else of the arena."""
