"""Reading data files into a Dataset, one concern a module (thaw/data/loaders.py is the public
face): tables (text and Parquet files, and the way back from a row to its line), columns
(columns to typed values, errors that point at the line), recbole (RecBole atomic files),
movielens (one set of feature names and spellings for every MovieLens source) and fetch
(finding MovieLens: a wheel's copy, the cache, a download)."""
