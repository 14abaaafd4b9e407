"""What a study's results say to people: the report (front, gains over the defaults), the
noise model (what a fresh server will measure) and the export of a pick as vLLM's config file.
Read only through the store's values."""
