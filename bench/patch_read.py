"""Reading patches: one GeoTIFF per patch (the paper's loader) vs the packed PatchSet store.

    python bench/patch_read.py            # N = 5000 patches of 11x33x33 float32, same run
    python bench/patch_read.py --full     # + build/load 137,592 x 11 x 33 x 33 float16 (~3.3 GB)

Part 1 writes N synthetic patches in the published layout (`export_published`), packs them
(`import_published`), then times reading all N: (a) one file at a time with rasterio.open +
read, as the paper's loader does; (b) from the store: `PatchSet.load` (a memory map) and one
fancy index of the same N rows in random order. Both run on a warm page cache (files just
written), so the figure compares the read paths, not the disk.
Part 2 (--full) builds a paper-sized store chunk by chunk with `PatchSetWriter` (open_memmap)
and loads it, each in a fresh process whose peak RSS (resource.getrusage) is reported.
Everything is written under a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} {cpu}, {os.cpu_count()} cores{mem}, {platform.system()}"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def rss_anon_gib() -> float:
    """Anonymous (heap) part of the current RSS: memory-mapped file pages are the rest."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def synthetic_table(n: int, seed: int = 0):
    import pandas as pd

    from glacierfacies.classes import CLASS_NAMES

    rng = np.random.default_rng(seed)
    glaciers = np.array([f"glacier{g:02d}" for g in range(31)])
    g = rng.integers(0, 31, n)
    return pd.DataFrame({
        "class": np.array(CLASS_NAMES)[rng.integers(0, 8, n)],
        "glacier": glaciers[g], "scene_id": [f"s{i % 92}" for i in range(n)],
        "date": "2021-08-15", "sensor": "sentinel2", "region": "alps", "fold": g % 6,
        "x": 600000.0 + (np.arange(n) % 1000) * 10, "y": 5200000.0 - (np.arange(n) // 1000) * 10,
        "crs": "EPSG:32632", "point_id": [f"p{i}" for i in range(n)],
    })


def read_bench(n: int, work: Path, repeats: int, with_rioxarray: bool = True) -> dict:
    import rasterio

    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.data.patchset import PatchSet, labels_from_names
    from glacierfacies.data.published import export_published, import_published
    from glacierfacies.features import FEATURE_NAMES

    rng = np.random.default_rng(0)
    table = synthetic_table(n)
    patches = rng.standard_normal((n, 11, 33, 33), dtype=np.float32)
    ps = PatchSet(patches, labels_from_names(table["class"].tolist()), table, FEATURE_NAMES,
                  CLASS_NAMES, 33, provenance={"pixel_size_m": 10.0},
                  fold_config={"k": 6, "method": "glacier-greedy"})
    t0 = time.perf_counter()
    folder = export_published(ps, work / "published", workers=2, progress=False)
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    import_published(folder, out_dir=work / "store", workers=2, progress=False)
    t_import = time.perf_counter() - t0
    files = sorted(folder.glob("*.tif"))
    assert len(files) == n

    # (a) one GeoTIFF at a time, as the paper's loader
    t0 = time.perf_counter()
    tif = np.empty((n, 11, 33, 33), np.float32)
    for i, path in enumerate(files):
        with rasterio.open(path) as src:
            tif[i] = src.read()
    t_tif = time.perf_counter() - t0

    # (a') the paper's own loader: rioxarray.open_rasterio per file
    t_rxr = float("nan")
    if with_rioxarray:
        import rioxarray

        t0 = time.perf_counter()
        for i, path in enumerate(files):
            da = rioxarray.open_rasterio(path)
            tif[i] = da.data.astype(np.float32)
            da.close()
        t_rxr = time.perf_counter() - t0

    # (b) packed store: one memory map + one fancy index of the same N rows (random order)
    order = rng.permutation(n)

    def cold(path: Path) -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        store = PatchSet.load(path)
        batch = store.patches[order]
        return time.perf_counter() - t0, batch

    times = []
    for _ in range(repeats):
        t, batch = cold(work / "store")
        times.append(t)
    assert np.array_equal(batch, tif[order])  # same values both ways (rows = sorted names)
    store = PatchSet.load(work / "store")
    warm = []
    for _ in range(repeats):  # the map stays open, as in a training loop
        t0 = time.perf_counter()
        store.patches[order]
        warm.append(time.perf_counter() - t0)
    # training-loop pattern: shuffled batches of 512, indices sorted within a batch (order
    # inside a batch does not matter to SGD), copied into one reused buffer
    batches = [np.sort(order[i:i + 512]) for i in range(0, n, 512)]

    def timed_batches(read, buf: np.ndarray) -> list[float]:
        """Seconds per pass of `read(batch_indices, out)` over all batches, `repeats` times."""
        times_ = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b in batches:
                read(b, buf[:len(b)])
            times_.append(time.perf_counter() - t0)
        return times_

    def numpy_take(view: np.ndarray):
        return lambda b, out: np.take(view, b, axis=0, out=out)

    view = np.asarray(store.patches)  # plain ndarray over the same map (no copy)
    batched = timed_batches(numpy_take(view), np.empty((512, 11, 33, 33), np.float32))
    # the same patches stored as float16 (how a paper-sized set is kept)
    ps16 = PatchSet.load(work / "store")
    ps16.patches = np.asarray(ps16.patches, dtype=np.float16)
    ps16.save(work / "store16")
    times16 = [cold(work / "store16")[0] for _ in range(repeats)]
    view16 = np.asarray(PatchSet.load(work / "store16").patches)
    buf16 = np.empty((512, 11, 33, 33), np.float16)
    batched16 = timed_batches(numpy_take(view16), buf16)
    # the same through PatchSet.read_batch (torch index_select on the torch CPU threads)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    ps16 = PatchSet.load(work / "store16")
    read16 = timed_batches(lambda b, out: ps16.read_batch(b, out=out), buf16)
    assert np.array_equal(buf16[:len(batches[-1])], view16[batches[-1]])
    med = {k: float(np.median(v)) for k, v in
           {"store_s": times, "store_warm_s": warm, "store_batched_s": batched,
            "store16_s": times16, "store16_batched_s": batched16,
            "store16_read_batch_s": read16}.items()}
    return {"n": n, "export_s": t_export, "import_s": t_import, "tif_s": t_tif,
            "rxr_s": t_rxr, **med}


def _build_full(dest: str, n: int) -> tuple[float, ...]:
    from glacierfacies.classes import CLASS_NAMES
    from glacierfacies.data.patchset import PatchSetWriter
    from glacierfacies.features import FEATURE_NAMES

    base = peak_rss_gib()
    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    chunk = 4096
    with PatchSetWriter(dest, n, FEATURE_NAMES, 33, "float16") as w:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            w.patches[start:start + m] = rng.standard_normal((m, 11, 33, 33), dtype=np.float32)
            if (start // chunk) % 8 == 7:
                w.patches.flush()
        w.finish(synthetic_table(n), CLASS_NAMES, None, {"source": "bench"},
                 {"k": 6, "method": "glacier-greedy"})
        anon = rss_anon_gib()  # while the whole store is still mapped
    return time.perf_counter() - t0, peak_rss_gib(), base, anon


def _load_full(dest: str) -> tuple[float, ...]:
    from glacierfacies.data.normalisation import fit_minmax
    from glacierfacies.data.patchset import PatchSet

    base = peak_rss_gib()
    t0 = time.perf_counter()
    ps = PatchSet.load(dest)
    t_load = time.perf_counter() - t0
    rss_after_load = peak_rss_gib()
    train, _, _ = ps.fold_split(0)
    t0 = time.perf_counter()
    norm = fit_minmax(ps, train)  # streams over ~2/3 of the store
    rng = np.random.default_rng(2)
    for _ in range(50):  # random training batches
        np.asarray(ps.patches[np.sort(rng.choice(len(ps), 512, replace=False))], np.float32)
    t_pass = time.perf_counter() - t0
    assert len(norm["min"]) == 11
    return t_load, rss_after_load, t_pass, peak_rss_gib(), base, rss_anon_gib()


def full_bench(work: Path, n: int) -> dict:
    ctx = mp.get_context("spawn")
    dest = str(work / "full_store")
    with ctx.Pool(1) as pool:
        t_build, rss_build, base_build, anon_build = pool.apply(_build_full, (dest, n))
    size_gb = sum(p.stat().st_size for p in Path(dest).iterdir()) / 1e9
    with ctx.Pool(1) as pool:
        t_load, rss_load, t_pass, rss_pass, base_load, anon_pass = pool.apply(_load_full,
                                                                              (dest,))
    return {"n": n, "size_gb": size_gb, "build_s": t_build, "build_peak_rss_gib": rss_build,
            "load_s": t_load, "load_peak_rss_gib": rss_load, "pass_s": t_pass,
            "pass_peak_rss_gib": rss_pass, "base_rss_gib": max(base_build, base_load),
            "build_anon_gib": anon_build, "pass_anon_gib": anon_pass}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="patches to read (>= 5000)")
    ap.add_argument("--repeats", type=int, default=5, help="store reads (median reported)")
    ap.add_argument("--no-rioxarray", action="store_true", help="skip the paper's loader")
    ap.add_argument("--full", action="store_true", help="also the 137,592-patch memory test")
    ap.add_argument("--full-n", type=int, default=137_592)
    ap.add_argument("--workdir", default=None, help="where the temporary folder goes")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"command: python {' '.join(sys.argv)}")
    work = Path(tempfile.mkdtemp(prefix="patch_read_", dir=args.workdir))
    try:
        if args.full:
            # first, while this process is small: a child's ru_maxrss starts at its parent's
            f = full_bench(work, args.full_n)
            print(f"full: {f['n']} x 11 x 33 x 33 float16, {f['size_gb']:.2f} GB on disk")
            print(f"  build (PatchSetWriter, chunks of 4096): {f['build_s']:.1f} s, "
                  f"peak RSS {f['build_peak_rss_gib']:.2f} GiB (of which anonymous at the "
                  f"end: {f['build_anon_gib']:.2f} GiB; the rest is the mapped file)")
            print(f"  load (memory map): {f['load_s'] * 1e3:.1f} ms, peak RSS "
                  f"{f['load_peak_rss_gib']:.2f} GiB")
            print(f"  fit_minmax over the training folds + 50 random batches of 512: "
                  f"{f['pass_s']:.1f} s, peak RSS {f['pass_peak_rss_gib']:.2f} GiB (anonymous "
                  f"{f['pass_anon_gib']:.2f} GiB)")
            print(f"  (peak RSS of each fresh process before any work: "
                  f"{f['base_rss_gib']:.2f} GiB)")
            shutil.rmtree(work / "full_store")
        r = read_bench(args.n, work, args.repeats, not args.no_rioxarray)
        n = r["n"]
        print(f"N = {n} patches of 11x33x33 float32 (published layout written in "
              f"{r['export_s']:.1f} s, packed by import_published in {r['import_s']:.1f} s)")
        rows = [("GeoTIFF per patch, rasterio.open + read", r["tif_s"]),
                ("GeoTIFF per patch, rioxarray.open_rasterio (paper's loader)", r["rxr_s"]),
                ("store float32: load + fancy index (median)", r["store_s"]),
                ("store float32: fancy index, map already open", r["store_warm_s"]),
                ("store float32: batches of 512 into a reused buffer", r["store_batched_s"]),
                ("store float16: load + fancy index", r["store16_s"]),
                ("store float16: batches of 512 into a reused buffer", r["store16_batched_s"]),
                ("store float16: PatchSet.read_batch, batches of 512 (torch, all cores)",
                 r["store16_read_batch_s"])]
        for name, t in rows:
            if np.isfinite(t):
                print(f"  {name:<62} {t:9.4f} s  {n / t:10.0f} patches/s")
        for slow_name, slow in rows[:2]:
            if not np.isfinite(slow):
                continue
            ratios = ", ".join(f"{slow / t:.0f}x ({name.split(':')[0]}{name[name.index(':') + 1:]})"
                               for name, t in rows[2:])
            print(f"store vs {slow_name}: {ratios}")
        shutil.rmtree(work / "published")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"cleaned up {work} (exists now: {work.exists()})")


if __name__ == "__main__":
    main()
