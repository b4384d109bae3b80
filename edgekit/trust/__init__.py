"""What keeps a file edgekit is handed from running code, allocating without bound or reaching outside its folder,
and what proves later where a file came from.

paths.py (names stay inside their folder), reading.py and arrays.py (bounded parsers), teacher_files.py (a model
folder checked before any library opens it), atomic.py (a folder appears whole or not at all), cache.py
(content-addressed entries, checked on read), provenance.py (sha256 of every input), signing.py and verify.py
(a bundle signed, and checked against its manifest).
"""
