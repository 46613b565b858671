"""Start-up hook of ``benchmarks/pipeline.py``'s read + write floor (see ``benchmarks/token_table.py``).

In a Python process started with this directory first on ``PYTHONPATH`` and ``SEQPACK_TOKEN_TABLE`` set, once
``seqpack.transforms.tokenize`` is imported (not before: the import order stays the real run's), its
``EncodeCache`` is replaced by a lookup into the table, so the tokenize step encodes nothing. Without the
variable it does nothing."""

import os

if os.environ.get("SEQPACK_TOKEN_TABLE"):
    import importlib.abc
    import importlib.util
    import json
    import pickle
    import sys
    import time

    _TARGET = "seqpack.transforms.tokenize"
    _TABLE = None

    def _table():
        """The table, loaded once per process; the load's CPU seconds go to the report directory."""
        global _TABLE
        if _TABLE is None:
            start = time.process_time()
            with open(os.environ["SEQPACK_TOKEN_TABLE"], "rb") as f:
                _TABLE = pickle.load(f)
            _report(f"load-{os.getpid()}.json", json.dumps({"cpu_s": time.process_time() - start}))
        return _TABLE

    def _report(name, text):
        folder = os.environ.get("SEQPACK_TOKEN_TABLE_REPORT")
        if folder:
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)

    class TableLookup:
        """``EncodeCache``'s interface: the ids of each text from the table; a text not in it is tokenized. Where
        the tokenize step takes one buffer of ids per batch (``TokenLists``), the lookups are built into one, as
        the cache would give it; older revisions take a list per text."""

        batch = None  # TokenLists.from_lists, where the revision has it

        def __init__(self, tokenize, **_options):
            self.tokenize = tokenize
            self.table = _table()
            self.misses = 0

        def encode(self, texts):
            table = self.table
            try:
                found = [table[text] for text in texts]
            except KeyError:
                missing = [text for text in texts if text not in table]
                encoded = self.tokenize(missing)
                table.update(zip(missing, encoded.tolists() if hasattr(encoded, "tolists") else encoded,
                                 strict=True))
                self.misses += len(missing)
                _report(f"miss-{os.getpid()}-{id(self)}.txt", str(self.misses))
                found = [table[text] for text in texts]
            return found if self.batch is None else self.batch(found)

    class _PatchOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != _TARGET:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                # the names the tokenize step makes its caches with (older revisions: EncodeCache only)
                if hasattr(module, "TokenLists"):
                    TableLookup.batch = staticmethod(module.TokenLists.from_lists)
                if hasattr(module, "cache_for"):
                    module.cache_for = lambda tokenize, **_options: TableLookup(tokenize)
                if hasattr(module, "EncodeCache"):
                    module.EncodeCache = TableLookup

            spec.loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, _PatchOnImport())
