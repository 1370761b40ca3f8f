"""Identity resolution shared by the engines: fuzzy profile matching and stable customer keys."""
