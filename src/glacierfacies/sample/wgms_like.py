"""WGMS-like FoG tables of the sample, from its own balance model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glacierfacies.sample.world import _WGMS_YEARS, PIXEL_M, _World
from glacierfacies.sample.writers import _fmt_csv_row, _glacier_ids

_OVERVIEW_COLUMNS = (
    "POLITICAL_UNIT", "NAME", "WGMS_ID", "Year", "TIME_SYSTEM", "BEGIN_PERIOD", "END_WINTER",
    "END_PERIOD", "ELA_PREFIX", "ELA", "ELA_UNC", "MIN_SITES_ACC", "MAX_SITES_ACC",
    "MIN_SITES_ABL", "MAX_SITES_ABL", "ACC_AREA", "ACC_AREA_UNC", "ABL_AREA", "ABL_AREA_UNC",
    "AAR", "PUB_IN_MBB", "PUB_IN_FOG", "INVESTIGATOR", "SPONS_AGENCY", "REFERENCE", "REMARKS",
)


_MB_COLUMNS = ("YEAR", "WGMS_ID", "POLITICAL_UNIT", "NAME", "AREA", "WINTER_BALANCE",
               "SUMMER_BALANCE", "ANNUAL_BALANCE", "REMARKS", "RGI_ID")


#: Mass balance = slope * (AAR - AAR0) + noise, per glacier (m w.e.): see `_write_wgms`.
MB_SLOPE_MWE, MB_AAR0, MB_NOISE_MWE = 3.0, 0.55, 0.2


def _write_wgms(folder: Path, world: _World, end_truth: dict[tuple[int, int], tuple[float, float, str]],
                rng: np.random.Generator) -> list[dict]:
    """FoG-layout overview and mbdata tables, 2004-2023; scene years carry the scenes'
    snow-only AAR and their snowline as ELA (the WGMS definitions)."""
    (folder / "mbdata").mkdir(parents=True)
    overview = [_fmt_csv_row(_OVERVIEW_COLUMNS)]
    params = []
    for gi, spec in enumerate(world.specs, start=1):
        rgi_id, wgms_id = _glacier_ids(gi)
        z = world.dem[world.glacier == gi]
        area = float((world.glacier == gi).sum()) * PIXEL_M**2 / 1e6
        slope = MB_SLOPE_MWE * (1 + rng.uniform(-0.1, 0.1))
        aar0 = MB_AAR0 + rng.uniform(-0.05, 0.05)
        params.append({"rgi_id": rgi_id, "slope_mwe": slope, "aar0": aar0})
        mb_lines = [",".join(_MB_COLUMNS)]
        prev_end = f"{_WGMS_YEARS[0] - 1}0925"
        for year in _WGMS_YEARS:
            area_y = round(area * (1 + 0.004 * (_WGMS_YEARS[-1] - year)), 5)
            if (gi, year) in end_truth:
                aar, ela, end_date = end_truth[(gi, year)]
                end_period = end_date.replace("-", "")
            else:
                aar = float(np.clip(rng.normal(0.45, 0.15), 0.03, 0.9))
                ela = float(np.quantile(z, 1 - aar))
                end_period = f"{year}09{int(rng.integers(15, 30)):02d}"
            annual = round(1000 * (slope * (aar - aar0) + rng.normal(0, MB_NOISE_MWE)))
            winter = round(float(rng.normal(1300, 200)))
            overview.append(_fmt_csv_row((
                spec.political_unit, spec.name.upper(), wgms_id, year, "FLO", int(prev_end),
                int(f"{year}0430"), int(end_period), None, round(ela), None, None, None, None,
                None, round(aar * area_y, 6), None, round((1 - aar) * area_y, 6), None,
                round(100 * aar, 6), None, None, "glacierfacies sample generator", None, None,
                "Synthetic glacier of the glacierfacies built-in sample.",
            )))
            mb_lines.append(_fmt_csv_row((
                year, wgms_id, spec.political_unit, spec.name.upper(), area_y, float(winter),
                float(annual - winter), float(annual), None, rgi_id)).replace('"', ""))
            prev_end = end_period
        (folder / "mbdata" / f"mbdata_WGMS-{wgms_id:05d}.csv").write_text(
            "\n".join(mb_lines) + "\n", encoding="latin-1")
    (folder / "WGMS-FoG-2021-05-E-MASS-BALANCE-OVERVIEW.csv").write_text(
        "\n".join(overview) + "\n", encoding="latin-1")
    return params

