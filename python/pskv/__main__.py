"""python3 -m pskv: the versions and what this installation supports."""
import os
import sys

import numpy

import pskv


def main() -> int:
    print(f"pskv {pskv.__version__}")
    print(f"  library:     {pskv.library_path}"
          + ("  (PSKV_LIBRARY)" if os.environ.get("PSKV_LIBRARY") else ""))
    print(f"  python:      {sys.executable} {sys.version.split()[0]}, numpy {numpy.__version__}")
    try:
        import torch
        print(f"  torch:       {torch.__version__} (pskv.torch available; gloo: "
              f"{torch.distributed.is_available() and torch.distributed.is_gloo_available()})")
    except ImportError:
        print("  torch:       not installed (pskv.torch unavailable)")
    print(f"  optimizers:  {' '.join(pskv.OPTIMIZERS)}")
    print(f"  updates:     {' '.join(pskv.UPDATE_MODES)} (+ staleness=S)")
    print(f"  codecs:      {' '.join(pskv.CODECS)} (+ lz4, top-k with error feedback)")
    # What this machine's store kinds do: a spill file through io_uring or
    # pread/pwrite (PSKV_IO=sync), checked by opening a scratch store.
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        try:
            with pskv.open(d, "durability=none memory_budget=1M") as s:
                t = s.table("probe", "dim=4")
                t.pull(range(1024))
            io = "pread/pwrite (PSKV_IO=sync)" if os.environ.get("PSKV_IO") == "sync" \
                else "io_uring, or pread/pwrite where io_uring cannot be set up"
            print(f"  spill tier:  works here ({io})")
        except pskv.Error as e:
            print(f"  spill tier:  fails here: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
