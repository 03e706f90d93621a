"""Writers of the sample's products: Sentinel-2 SAFE, Landsat C2 L2, outlines, labels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from scipy import ndimage

from glacierfacies.classes import CLASS_NAMES
from glacierfacies.sample.world import (
    _FIXED_GPKG_DATE,
    CRS_EPSG,
    HEIGHT,
    LABEL_EDGE_PX,
    LANDSAT_BANDS,
    LANDSAT_OFFSET,
    LANDSAT_SCALE,
    PIXEL_M,
    S2_BAND_RES,
    S2_BANDS,
    S2_OFFSET,
    S2_SCALE,
    WIDTH,
    X0,
    Y0,
    _block_mean,
    _SceneSpec,
    _sensor_noise,
    _World,
)


def _transform(res: float):
    from affine import Affine

    return Affine(res, 0.0, X0, 0.0, -res, Y0)


def _write_tif(path: Path, data: np.ndarray, res: float, nodata, colormap=None,
               descriptions: tuple[str, ...] | None = None) -> None:
    """Deterministic compressed GeoTIFF (no timestamps) on the sample grid at `res` metres."""
    import rasterio

    arr = data if data.ndim == 3 else data[None]
    predictor = 3 if arr.dtype.kind == "f" else 2
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                   dtype=arr.dtype.name, crs=f"EPSG:{CRS_EPSG}", transform=_transform(res),
                   nodata=nodata, compress="deflate", predictor=predictor, tiled=True,
                   blockxsize=256, blockysize=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(arr)
            if colormap is not None:
                dst.write_colormap(1, colormap)
            if descriptions:
                for i, d in enumerate(descriptions, start=1):
                    dst.set_band_description(i, d)


def _scene_centre_lonlat() -> tuple[float, float]:
    from rasterio.warp import transform

    lon, lat = transform(f"EPSG:{CRS_EPSG}", "EPSG:4326", [X0 + WIDTH * PIXEL_M / 2],
                         [Y0 - HEIGHT * PIXEL_M / 2])
    return float(lon[0]), float(lat[0])


def _s2_dn(refl: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((refl - S2_OFFSET) / S2_SCALE), 1, 65534).astype(np.uint16)


def _landsat_dn(refl: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((refl - LANDSAT_OFFSET) / LANDSAT_SCALE), 1, 65535).astype(np.uint16)


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _write_s2(folder: Path, spec: _SceneSpec, refl: np.ndarray, sun_az: float, sun_el: float,
              rng: np.random.Generator) -> Path:
    """A Sentinel-2 L2A-like .SAFE folder: band GeoTIFFs (.tif, not .jp2), MTD_MSIL2A.xml,
    GRANULE/<granule>/MTD_TL.xml, laid out and named as in an ESA product."""
    safe = folder / f"{spec.scene_id}.SAFE"
    abs_orbit = 28000 + (spec.time - dt.datetime(2022, 7, 1)).days * 14 // 10
    granule = f"L2A_T32TPS_A{abs_orbit:06d}_{spec.time:%Y%m%dT%H%M%S}"
    img = safe / "GRANULE" / granule / "IMG_DATA"
    stem = f"T32TPS_{spec.time:%Y%m%dT%H%M%S}"
    files = []
    for b, band in enumerate(S2_BANDS):
        res = S2_BAND_RES[band]
        data = _block_mean(refl[b], res // 10) if res > 10 else refl[b]
        dn = _s2_dn(_sensor_noise(data, rng))
        rel = f"GRANULE/{granule}/IMG_DATA/R{res}m/{stem}_{band}_{res}m"
        _write_tif(img / f"R{res}m" / f"{stem}_{band}_{res}m.tif", dn, res, 0)
        files.append(rel)
    start = spec.time
    stop = start + dt.timedelta(seconds=1, milliseconds=24)
    gen = dt.datetime.strptime(spec.scene_id.rsplit("_", 1)[1], "%Y%m%dT%H%M%S")
    image_files = "\n".join(f"            <IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    offsets = "\n".join(
        f'        <BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13)
    )
    mtd = f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{_iso(start)}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{_iso(stop)}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{spec.scene_id}.SAFE</PRODUCT_URI>
      <PROCESSING_LEVEL>Level-2A</PROCESSING_LEVEL>
      <PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>
      <PROCESSING_BASELINE>05.09</PROCESSING_BASELINE>
      <PRODUCT_DOI>https://doi.org/10.5270/S2_-znk9xsj</PRODUCT_DOI>
      <GENERATION_TIME>{_iso(gen)}</GENERATION_TIME>
      <PREVIEW_IMAGE_URL>Not applicable</PREVIEW_IMAGE_URL>
      <PREVIEW_GEO_INFO>Not applicable</PREVIEW_GEO_INFO>
      <Datatake datatakeIdentifier="GS2B_{start:%Y%m%dT%H%M%S}_{abs_orbit:06d}_N05.09">
        <SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{_iso(start)}</DATATAKE_SENSING_START>
        <SENSING_ORBIT_NUMBER>108</SENSING_ORBIT_NUMBER>
        <SENSING_ORBIT_DIRECTION>DESCENDING</SENSING_ORBIT_DIRECTION>
      </Datatake>
      <Query_Options completeSingleTile="true">
        <PRODUCT_FORMAT>SAFE_COMPACT</PRODUCT_FORMAT>
      </Query_Options>
      <Product_Organisation>
        <Granule_List>
          <Granule datastripIdentifier="S2B_OPER_MSI_L2A_DS_2BPS_{gen:%Y%m%dT%H%M%S}_S{start:%Y%m%dT%H%M%S}_N05.09" granuleIdentifier="S2B_OPER_MSI_L2A_TL_2BPS_{gen:%Y%m%dT%H%M%S}_A{abs_orbit:06d}_T32TPS_N05.09" imageFormat="GeoTIFF">
{image_files}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <Special_Values>
        <SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT>
        <SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX>
      </Special_Values>
      <QUANTIFICATION_VALUES_LIST>
        <BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
        <AOT_QUANTIFICATION_VALUE unit="none">1000.0</AOT_QUANTIFICATION_VALUE>
        <WVP_QUANTIFICATION_VALUE unit="cm">1000.0</WVP_QUANTIFICATION_VALUE>
      </QUANTIFICATION_VALUES_LIST>
      <BOA_ADD_OFFSET_VALUES_LIST>
{offsets}
      </BOA_ADD_OFFSET_VALUES_LIST>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-2A_User_Product>
"""
    (safe / "MTD_MSIL2A.xml").write_text(mtd, encoding="utf-8")
    tl = f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:Level-2A_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_Level-2A_Tile_Metadata.xsd">
  <n1:General_Info>
    <TILE_ID metadataLevel="Brief">S2B_OPER_MSI_L2A_TL_2BPS_{gen:%Y%m%dT%H%M%S}_A{abs_orbit:06d}_T32TPS_N05.09</TILE_ID>
    <DATASTRIP_ID metadataLevel="Standard">S2B_OPER_MSI_L2A_DS_2BPS_{gen:%Y%m%dT%H%M%S}_S{start:%Y%m%dT%H%M%S}_N05.09</DATASTRIP_ID>
    <DOWNLINK_PRIORITY metadataLevel="Standard">NOMINAL</DOWNLINK_PRIORITY>
    <SENSING_TIME metadataLevel="Standard">{_iso(start + dt.timedelta(seconds=6, milliseconds=412))}</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone 32N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{CRS_EPSG}</HORIZONTAL_CS_CODE>
      <Size resolution="10">
        <NROWS>{HEIGHT}</NROWS>
        <NCOLS>{WIDTH}</NCOLS>
      </Size>
      <Size resolution="20">
        <NROWS>{HEIGHT // 2}</NROWS>
        <NCOLS>{WIDTH // 2}</NCOLS>
      </Size>
      <Geoposition resolution="10">
        <ULX>{X0:.0f}</ULX>
        <ULY>{Y0:.0f}</ULY>
        <XDIM>10</XDIM>
        <YDIM>-10</YDIM>
      </Geoposition>
      <Geoposition resolution="20">
        <ULX>{X0:.0f}</ULX>
        <ULY>{Y0:.0f}</ULY>
        <XDIM>20</XDIM>
        <YDIM>-20</YDIM>
      </Geoposition>
    </Tile_Geocoding>
    <Tile_Angles metadataLevel="Standard">
      <Mean_Sun_Angle>
        <ZENITH_ANGLE unit="deg">{90 - sun_el:.6f}</ZENITH_ANGLE>
        <AZIMUTH_ANGLE unit="deg">{sun_az:.6f}</AZIMUTH_ANGLE>
      </Mean_Sun_Angle>
      <Mean_Viewing_Incidence_Angle_List>
        <Mean_Viewing_Incidence_Angle bandId="1">
          <ZENITH_ANGLE unit="deg">4.1</ZENITH_ANGLE>
          <AZIMUTH_ANGLE unit="deg">106.2</AZIMUTH_ANGLE>
        </Mean_Viewing_Incidence_Angle>
      </Mean_Viewing_Incidence_Angle_List>
    </Tile_Angles>
  </n1:Geometric_Info>
</n1:Level-2A_Tile_ID>
"""
    (safe / "GRANULE" / granule / "MTD_TL.xml").write_text(tl, encoding="utf-8")
    return safe


def _landsat_nodata(spec: _SceneSpec, world: _World) -> np.ndarray:
    """(H/3, W/3) bool: a swath-edge corner without data, kept clear of glaciers and lakes."""
    rows, cols = np.mgrid[0 : HEIGHT // 3, 0 : WIDTH // 3]
    keep = ndimage.binary_dilation((world.glacier > 0) | world.lake, iterations=25)
    keep30 = _block_mean(keep.astype(np.float32), 3) > 0
    size = 45
    while size > 0:
        corner = (cols + rows < size) if spec.sensor == "landsat9" else (
            (WIDTH // 3 - 1 - cols) + (HEIGHT // 3 - 1 - rows) < size)
        if not (corner & keep30).any():
            return corner
        size -= 5
    return np.zeros_like(keep30)


def _write_landsat(folder: Path, spec: _SceneSpec, refl: np.ndarray, nodata30: np.ndarray,
                   sun_az: float, sun_el: float, rng: np.random.Generator) -> Path:
    """A Landsat Collection-2 Level-2-like folder: <id>_SR_B2..B7.TIF (30 m) and <id>_MTL.txt."""
    pid = spec.scene_id
    out = folder / pid
    data = _sensor_noise(_block_mean(refl, 3), rng)
    dn = _landsat_dn(data)
    dn[:, nodata30] = 0
    for b, band in enumerate(LANDSAT_BANDS):
        _write_tif(out / f"{pid}_{band}.TIF", dn[b], 30, 0)
    sid = "LANDSAT_9" if spec.sensor == "landsat9" else "LANDSAT_8"
    proc = dt.datetime.strptime(pid.split("_")[4], "%Y%m%d") + dt.timedelta(hours=3, minutes=7)
    cloud_pct = float(rng.uniform(3, 9))
    x1, y1 = X0 + WIDTH * PIXEL_M, Y0 - HEIGHT * PIXEL_M
    files = "\n".join(f'    FILE_NAME_BAND_{b[-1]} = "{pid}_{b}.TIF"' for b in LANDSAT_BANDS)
    params = "\n".join(
        f"    REFLECTANCE_MAXIMUM_BAND_{b[-1]} = 1.602213\n"
        f"    REFLECTANCE_MINIMUM_BAND_{b[-1]} = -0.199972" for b in LANDSAT_BANDS
    )
    quant = "\n".join(
        f"    QUANTIZE_CAL_MAX_BAND_{b[-1]} = 65535\n    QUANTIZE_CAL_MIN_BAND_{b[-1]} = 1"
        for b in LANDSAT_BANDS
    )
    mult = "\n".join(f"    REFLECTANCE_MULT_BAND_{b[-1]} = 2.75e-05" for b in LANDSAT_BANDS)
    add = "\n".join(f"    REFLECTANCE_ADD_BAND_{b[-1]} = -0.200000" for b in LANDSAT_BANDS)
    secs = spec.time.second + spec.time.microsecond / 1e6
    mtl = f"""GROUP = LANDSAT_METADATA_FILE
  GROUP = PRODUCT_CONTENTS
    ORIGIN = "Image courtesy of the U.S. Geological Survey"
    DIGITAL_OBJECT_IDENTIFIER = "https://doi.org/10.5066/P9OGBGM6"
    LANDSAT_PRODUCT_ID = "{pid}"
    PROCESSING_LEVEL = "L2SP"
    COLLECTION_NUMBER = 02
    COLLECTION_CATEGORY = "T1"
    OUTPUT_FORMAT = "GEOTIFF"
{files}
    FILE_NAME_METADATA_ODL = "{pid}_MTL.txt"
    DATA_TYPE_BAND_2 = "UINT16"
  END_GROUP = PRODUCT_CONTENTS
  GROUP = IMAGE_ATTRIBUTES
    SPACECRAFT_ID = "{sid}"
    SENSOR_ID = "OLI_TIRS"
    WRS_TYPE = 2
    WRS_PATH = 193
    WRS_ROW = 27
    NADIR_OFFNADIR = "NADIR"
    TARGET_WRS_PATH = 193
    TARGET_WRS_ROW = 27
    DATE_ACQUIRED = {spec.date}
    SCENE_CENTER_TIME = "{spec.time:%H:%M}:{secs:010.7f}Z"
    STATION_ID = "LGN"
    CLOUD_COVER = {cloud_pct:.2f}
    CLOUD_COVER_LAND = {cloud_pct:.2f}
    IMAGE_QUALITY_OLI = 9
    IMAGE_QUALITY_TIRS = 9
    SUN_AZIMUTH = {sun_az:.8f}
    SUN_ELEVATION = {sun_el:.8f}
    EARTH_SUN_DISTANCE = 1.0086000
  END_GROUP = IMAGE_ATTRIBUTES
  GROUP = PROJECTION_ATTRIBUTES
    MAP_PROJECTION = "UTM"
    DATUM = "WGS84"
    ELLIPSOID = "WGS84"
    UTM_ZONE = 32
    GRID_CELL_SIZE_REFLECTIVE = 30.00
    REFLECTIVE_LINES = {HEIGHT // 3}
    REFLECTIVE_SAMPLES = {WIDTH // 3}
    ORIENTATION = "NORTH_UP"
    CORNER_UL_PROJECTION_X_PRODUCT = {X0:.3f}
    CORNER_UL_PROJECTION_Y_PRODUCT = {Y0:.3f}
    CORNER_UR_PROJECTION_X_PRODUCT = {x1:.3f}
    CORNER_UR_PROJECTION_Y_PRODUCT = {Y0:.3f}
    CORNER_LL_PROJECTION_X_PRODUCT = {X0:.3f}
    CORNER_LL_PROJECTION_Y_PRODUCT = {y1:.3f}
    CORNER_LR_PROJECTION_X_PRODUCT = {x1:.3f}
    CORNER_LR_PROJECTION_Y_PRODUCT = {y1:.3f}
  END_GROUP = PROJECTION_ATTRIBUTES
  GROUP = LEVEL2_PROCESSING_RECORD
    ORIGIN = "Image courtesy of the U.S. Geological Survey"
    LANDSAT_PRODUCT_ID = "{pid}"
    PROCESSING_LEVEL = "L2SP"
    PROCESSING_SOFTWARE_VERSION = "LPGS_16.1.0"
    ALGORITHM_SOURCE_SURFACE_REFLECTANCE = "LaSRC_1.5.0"
    DATE_PRODUCT_GENERATED = {proc:%Y-%m-%dT%H:%M:%SZ}
  END_GROUP = LEVEL2_PROCESSING_RECORD
  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
{params}
{quant}
{mult}
{add}
  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS
END_GROUP = LANDSAT_METADATA_FILE
END
"""
    (out / f"{pid}_MTL.txt").write_text(mtl, encoding="ascii")
    return out


#: How a deliberately wrong label is drawn from the true class (mostly among facies).
_FLIPS: dict[str, dict[str, float]] = {
    "ice": {"firn": 0.4, "refrozen-like": 0.3, "debris": 0.3},
    "snow": {"firn": 0.8, "ice": 0.1, "cloud": 0.1},
    "firn": {"ice": 0.5, "snow": 0.5},
    "debris": {"ice": 0.8, "shadow": 0.2},
    "refrozen-like": {"ice": 0.6, "firn": 0.2, "snow": 0.2},
    "shadow": {"ice": 0.5, "debris": 0.5},
    "water": {"shadow": 0.5, "ice": 0.5},
    "cloud": {"snow": 1.0},
}


FLIP_FRACTION = 0.10


LABELS_PER_CLASS = {"sentinel2": 110, "landsat": 55}  # per scene, fewer where a class is rare


def _glacier_ids(i: int) -> tuple[str, int]:
    """(RGI-like id, WGMS-like id) of the i-th glacier (1-based)."""
    return f"RGI60-11.9{i:04d}", 90000 + i


def _outlines(world: _World):
    """One polygon per glacier from the glacier mask (pixel-exact, so rasterising the outline
    gives the mask back); drops stray pixels that are not part of the main polygon."""
    import geopandas as gpd
    from rasterio.crs import CRS

    from glacierfacies.outlines import polygonise_mask, rasterise_outlines
    from glacierfacies.scenes.grid import Grid

    rows = []
    for gi, spec in enumerate(world.specs, start=1):
        geom = polygonise_mask(world.glacier == gi, _transform(PIXEL_M))
        if geom.geom_type == "MultiPolygon":
            geom = max(geom.geoms, key=lambda p: p.area)
        rgi_id, wgms_id = _glacier_ids(gi)
        rows.append({"rgi_id": rgi_id, "name": spec.name, "region": spec.region,
                     "wgms_id": wgms_id, "area_km2": round(geom.area / 1e6, 6), "geometry": geom})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=f"EPSG:{CRS_EPSG}")
    # keep the raster mask identical to the outlines
    grid = Grid(CRS.from_epsg(CRS_EPSG), _transform(PIXEL_M), HEIGHT, WIDTH)
    world.glacier[:] = rasterise_outlines(grid, gdf)
    world.lake &= world.glacier == 0
    return gdf


def _write_gpkg(gdf, path: Path, layer: str) -> None:
    """GeoPackage with a fixed last_change date, so the file is byte-identical per seed."""
    import pyogrio

    old = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _FIXED_GPKG_DATE})
    try:
        pyogrio.write_dataframe(gdf, path, layer=layer, driver="GPKG")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": old})


def _sample_labels(spec: _SceneSpec, classes: np.ndarray, opacity: np.ndarray,
                   nearest: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """Expert-like points on clear examples: the class fills the 5 x 5 neighbourhood (so also
    the point's 20 m and 30 m pixels), thin cloud is avoided, >= 20 px from the scene edge."""
    family = "sentinel2" if spec.sensor == "sentinel2" else "landsat"
    quota = LABELS_PER_CLASS[family]
    inner = np.zeros(classes.shape, bool)
    inner[LABEL_EDGE_PX:-LABEL_EDGE_PX, LABEL_EDGE_PX:-LABEL_EDGE_PX] = True
    clear = ndimage.maximum_filter(opacity, 5) < 0.1
    opaque = ndimage.minimum_filter(opacity, 5) >= 0.85
    box = np.ones((5, 5), bool)
    out = []
    for code, name in enumerate(CLASS_NAMES):
        ok = ndimage.binary_erosion(classes == code, box) & inner
        ok &= opaque if name == "cloud" else clear
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            continue
        pick = np.sort(rng.choice(idx, size=min(quota, idx.size), replace=False))
        r, c = np.divmod(pick, WIDTH)
        for rr, cc in zip(r, c, strict=True):
            out.append({"true_class": name, "row": int(rr), "col": int(cc),
                        "glacier_i": int(nearest[rr, cc])})
    return out


def _fmt_csv_row(values) -> str:
    """One line in the FoG CSV style: text quoted, numbers bare, missing values empty."""
    parts = []
    for v in values:
        if v is None:
            parts.append("")
        elif isinstance(v, str):
            parts.append('"' + v.replace('"', '""') + '"')
        else:
            parts.append(str(v))
    return ",".join(parts)

