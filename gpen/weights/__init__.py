"""Weight files on disk and on the network: known files, model folders, downloads, name resolution.

- ``registry``: the files the pack knows (names, folders, URLs, sizes, hashes);
- ``paths``: where model folders are (ComfyUI's ``models/`` tree or the pack's own);
- ``download``: the verified downloader and "find it or download it";
- ``models``: GPEN model names (``GPEN-BFR-512``) to checked files.
"""
