"""Data: text in, token ids out.

text (read in chunks, checked) -> tokenizers (char, byte, subword) -> encode (chunk by chunk)
-> store (the memory-mapped cache) -> corpus (splits, the cache hit) -> batching (TBPTT windows);
records (one item per line), named (downloadable corpora) beside them.
"""
