"""The files of a run directory: their schema, the one reader and writer (RunDir), the
cell files, and how numbers and option strings are spelt in them."""
