"""WGMS / GLAMOS readers on small synthetic files, and the acceptance numbers on the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glacierfacies.errors import InputError
from glacierfacies.products import massbalance as mb
from glacierfacies.products.glamos import read_glamos
from glacierfacies.products.wgms import (
    OVERVIEW_NAME,
    link_glaciers,
    read_mbdata,
    read_overview,
    read_wgms,
    wgms_aar_table,
)

OVERVIEW_HEADER = (
    '"POLITICAL_UNIT","NAME","WGMS_ID","Year","TIME_SYSTEM","BEGIN_PERIOD","END_WINTER",'
    '"END_PERIOD","ELA_PREFIX","ELA","ELA_UNC","AAR","REMARKS"\n'
)
MB_HEADER = ("YEAR,WGMS_ID,POLITICAL_UNIT,NAME,AREA,WINTER_BALANCE,SUMMER_BALANCE,"
             "ANNUAL_BALANCE,REMARKS,RGI_ID\n")


def write_fog(folder: Path, glaciers: dict[int, tuple[str, str, list[tuple[int, float, float]]]]
              ) -> Path:
    """A tiny FoG folder: {wgms_id: (name, rgi_id, [(year, aar_percent, balance_mm)])}."""
    (folder / "mbdata").mkdir(parents=True, exist_ok=True)
    ov = [OVERVIEW_HEADER]
    for wid, (name, rgi, rows) in glaciers.items():
        lines = [MB_HEADER]
        for year, aar, bal in rows:
            ov.append(f'"AT","{name}",{wid},{year},,,,,,{2900 - 300 * aar / 100:.0f},,'
                      f'{aar},\n')
            lines.append(f"{year},{wid},AT,{name},,,,{bal},,{rgi}\n")
        (folder / "mbdata" / f"mbdata_WGMS-{wid:05d}.csv").write_text("".join(lines))
    (folder / OVERVIEW_NAME).write_bytes("".join(ov).encode("latin-1"))
    return folder


def test_read_wgms_units_latin1_and_links(tmp_path):
    folder = write_fog(tmp_path / "fog", {
        491: ("HINTEREIS F.", "RGI60-11.00897", [(2000, 40.0, -500.0), (2001, 0.0, -2100.0)]),
        7: ("GRÜNAU", "RGI60-11.00001", [(2000, 55.0, 120.0)]),
    })
    rec = read_wgms(folder)
    assert len(rec) == 3
    row = rec[(rec.wgms_id == 491) & (rec.year == 2000)].iloc[0]
    assert row.annual_balance_mwe == pytest.approx(-0.5)
    assert row.aar == pytest.approx(0.40)
    assert row.ela_m == pytest.approx(2780)
    assert "GRÜNAU" in set(rec.name)
    links = link_glaciers(["491", "WGMS-00491", "RGI60-11.00897", "Hintereisferner",
                                "Grünau", "nowhere"], rec).tolist()
    assert links[:5] == ["491", "491", "491", "491", "7"] and pd.isna(links[5])
    assert len(wgms_aar_table(rec)) == 3


def test_missing_columns_name_the_file(tmp_path):
    folder = write_fog(tmp_path / "fog", {1: ("A", "RGI60-11.00001", [(2000, 40.0, -500.0)])})
    bad = folder / "mbdata" / "mbdata_WGMS-00001.csv"
    bad.write_text("YEAR,WGMS_ID,NAME,RGI_ID\n2000,1,A,RGI60-11.00001\n")
    with pytest.raises(InputError, match=r"mbdata_WGMS-00001\.csv: missing column\(s\) "
                                         r"ANNUAL_BALANCE"):
        read_mbdata(folder / "mbdata")
    ov = folder / OVERVIEW_NAME
    ov.write_text('"NAME","WGMS_ID","Year"\n"A",1,2000\n')
    with pytest.raises(InputError, match="OVERVIEW.csv: missing column.*AAR"):
        read_overview(ov)
    with pytest.raises(InputError, match="WGMS folder not found"):
        read_wgms(tmp_path / "nope")


def test_glamos_reader(tmp_path):
    f = tmp_path / "glamos.csv"
    f.write_text(
        "licence line\ncite line\n\nTITLE\n\n"
        "glacier name;glacier id;start date of observation;end date of winter observation;"
        "end date of observation;winter mass balance;summer mass balance;annual mass balance;"
        "equilibrium line altitude;accumulation area ratio;glacier area;minimum elevation of "
        "glacier;maximum elevation of glacier;observer\n"
        ";(SGI);date_start;date_end_winter;date_end;Bw;Bs;Ba;ELA;AAR;area;h_min;h_max;\n"
        ";;yyyy-mm-dd;yyyy-mm-dd;yyyy-mm-dd;mm w.e.;mm w.e.;mm w.e.;m asl.;%;km2;m;m;\n"
        "Silvrettagletscher;A10g-05;1914-10-01;1915-04-30;1915-09-30;1445;-1860;-415;2795;45;"
        "4.07;2406;3185; VAW\n")
    g = read_glamos(f)
    assert len(g) == 1
    r = g.iloc[0]
    assert (r.sgi_id, r.year, r.annual_balance_mwe, r.aar) == ("A10g-05", 1915, -0.415, 0.45)
    assert link_glaciers(["Silvretta", "A10g-05"], g).tolist() == ["A10g-05", "A10g-05"]
    f.write_text("not;glamos\n1;2\n")
    with pytest.raises(InputError, match="not a GLAMOS CSV"):
        read_glamos(f)


# ---------------------------------------------------------------- real data
@pytest.fixture(scope="session")
def wgms_aar(shared_data):
    """WGMS's own AAR joined to annual balances, read once per session."""
    return wgms_aar_table(read_wgms(shared_data / "wgms"))


@pytest.fixture(scope="session")
def wgms_regressions(wgms_aar):
    args = (wgms_aar["aar"].to_numpy(), wgms_aar["annual_balance_mwe"].to_numpy(),
            wgms_aar["wgms_id"].astype(str).to_numpy())
    return mb.regress(*args, guards=mb.RegressionGuards.off()), mb.regress(*args)


def test_real_wgms_join(wgms_aar):
    assert len(wgms_aar) == 4786
    assert wgms_aar["wgms_id"].nunique() == 228
    assert not wgms_aar.duplicated(["wgms_id", "year"]).any()
    assert (wgms_aar["aar"] == 0).sum() == 514 and (wgms_aar["aar"] == 1).sum() == 54
    hef = wgms_aar[(wgms_aar.wgms_id == 491)]
    assert hef["rgi_id"].iloc[0] == "RGI60-11.00897"
    assert np.abs(hef["annual_balance_mwe"]).max() < 3.0  # m w.e., not mm


def test_real_wgms_acceptance(wgms_regressions):
    unguarded, guarded = wgms_regressions
    for res in (unguarded, guarded):  # the global model has no guards
        assert res.global_logo.n == 4786
        assert res.global_logo.r == pytest.approx(0.804, abs=0.005)
        assert res.global_logo.rmse_mwe == pytest.approx(0.504, abs=0.005)
    for res in (unguarded, guarded):
        assert res.per_glacier_loyo.n == 4446
        assert res.per_glacier_loyo.r == pytest.approx(0.880, abs=0.005)
        assert res.per_glacier_loyo.rmse_mwe == pytest.approx(0.405, abs=0.005)
    # exact figures of the unguarded fit, and the README's in-sample ones
    assert unguarded.per_glacier_loyo.r == pytest.approx(0.8802, abs=5e-4)
    assert unguarded.per_glacier_loyo.rmse_mwe == pytest.approx(0.4046, abs=5e-4)
    assert unguarded.per_glacier_in_sample.r == pytest.approx(0.910, abs=5e-4)
    assert unguarded.per_glacier_in_sample.rmse_mwe == pytest.approx(0.352, abs=5e-4)
    d = guarded.to_dict()
    assert len(d["guarded"]) == 7 and len(d["skipped"]) == 67
    assert {g["glacier"] for g in d["guarded"]} >= {"3902", "3903"}  # AAR 0 in all years


def test_real_glamos(shared_data):
    g = read_glamos(shared_data / "glamos" / "massbalance_observation_r2021.csv")
    assert len(g) == 971 and g["sgi_id"].nunique() == 30
    silv = g[(g.sgi_id == "A10g-05") & (g.year == 1915)].iloc[0]
    assert silv.annual_balance_mwe == pytest.approx(-0.415) and silv.aar == pytest.approx(0.45)
