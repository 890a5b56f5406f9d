"""Sentinel-1/2 acquisitions from a STAC API or a static STAC catalog.

`url` is either a STAC API root (searched with `/search` over the grid's lon/lat bounds and the
year) or a static catalog (`catalog.json`, a local path or an http URL), whose collections are
walked item by item and filtered locally by footprint and year. Either way every item of the
year that touches the region is kept: no cloud-cover or coverage filter, because date sets that
depend on the region put seams between adjacent tiles (SPEC section 1).

Items map to `Granule`s with the conventions of the real collections:

* Sentinel-2 L2A: the asset keys of Microsoft Planetary Computer (`B02` ... `B12`, `B8A`, `SCL`)
  or of Element84 Earth Search (`blue`, `green`, `red`, `rededge1-3`, `nir`, `nir08`,
  `swir16`, `swir22`, `scl`), case-insensitive. `s2:processing_baseline` gives the baseline;
  Earth Search's `earthsearch:boa_offset_applied: true` says the BOA offset was already removed.
  Its `false` only says Earth Search did not touch the values (it is also `false` on items from
  before baseline 04.00, which never carried the offset), so `false` leaves the decision to the
  baseline or the date: it must not force a subtraction.
* Sentinel-1 RTC (Planetary Computer `sentinel-1-rtc`): assets `vv` / `vh`, linear power, orbit
  from `sat:orbit_state`.

`modifier` is applied to every item (and, on an API, to every page), e.g.
`planetary_computer.sign_inplace`, which appends a SAS token to asset hrefs. Such tokens expire:
sign close to the run.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import warnings
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlparse

from tessera.preprocess.acquisition import Granule, PreprocessError, RasterAsset
from tessera.geo import TargetGrid

#: Our band name -> asset keys that carry it (lower case; first present wins).
S2_ASSET_KEYS: dict[str, tuple[str, ...]] = {
    "B02": ("b02", "blue"), "B03": ("b03", "green"), "B04": ("b04", "red"),
    "B05": ("b05", "rededge1"), "B06": ("b06", "rededge2"), "B07": ("b07", "rededge3"),
    "B08": ("b08", "nir"), "B8A": ("b8a", "nir08"), "B11": ("b11", "swir16"),
    "B12": ("b12", "swir22"), "SCL": ("scl",),
}
S1_ASSET_KEYS: dict[str, tuple[str, ...]] = {"VV": ("vv",), "VH": ("vh",)}
ITEM_SEARCH = "ITEM_SEARCH"
_SEARCH_LIMIT = 100  # items per page: within the maximum of the public APIs


@dataclasses.dataclass
class StacSource:
    """Granules from a STAC API root or a static catalog; see the module docstring.

    `s2_collection` / `s1_collection` = None skips that sensor. `timeout` (seconds) bounds each
    HTTP request for metadata (pixels are read later, by GDAL).
    """

    url: str
    s2_collection: str | None = "sentinel-2-l2a"
    s1_collection: str | None = "sentinel-1-rtc"
    modifier: Callable[[Any], Any] | None = None
    name: str = "stac"
    timeout: float | None = 60.0

    def describe(self) -> dict[str, Any]:
        mod = None
        if self.modifier is not None:  # a stable name, never a repr with a memory address
            mod = ".".join(filter(None, (getattr(self.modifier, "__module__", None),
                                         getattr(self.modifier, "__qualname__", None)))) or \
                type(self.modifier).__name__
        return {"kind": "stac", "location": self.url, "s2_collection": self.s2_collection,
                "s1_collection": self.s1_collection, "modifier": mod}

    # --- search ---------------------------------------------------------------------------------

    def search(self, grid: TargetGrid, year: int) -> list[Granule]:
        wanted = [(s, c) for s, c in (("s2", self.s2_collection), ("s1", self.s1_collection))
                  if c]
        if not wanted:
            raise PreprocessError(f"STAC {self.url}: no collection given (both the Sentinel-2 "
                                  "and the Sentinel-1 collection are None)")
        from pystac_client import Client

        bounds = tuple(float(v) for v in grid.lonlat_bounds())
        root = self._open()
        is_api = isinstance(root, Client)
        out: list[Granule] = []
        for sensor, collection in wanted:
            items = (self._api_items(root, collection, bounds, year) if is_api
                     else self._static_items(root, collection, bounds, year))
            for item in items:
                out.append(item_to_granule(item, sensor, collection))
        return sorted(out, key=lambda g: (g.sensor, g.date, g.orbit or "", g.id))

    def _open(self) -> Any:
        """A pystac_client Client for an API; a plain pystac Catalog or Collection (read with
        `_stac_io`) for a static catalog, so no pystac_client fallback code runs on it."""
        import pystac
        from pystac_client import Client

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # NoConformsTo on static catalogs
                try:
                    client = Client.open(self.url, modifier=self.modifier, timeout=self.timeout)
                    if client.conforms_to(ITEM_SEARCH):
                        return client
                except pystac.STACTypeError:
                    pass  # the root is a Collection, not a Catalog: a static collection
                root = pystac.read_file(self.url, stac_io=_stac_io(self.timeout))
        except Exception as exc:  # APIError, OSError, JSON and STAC errors alike
            raise PreprocessError(f"STAC {self.url}: cannot open it as a STAC API or catalog "
                                  f"({_short(exc)})") from None
        if not isinstance(root, pystac.Catalog):  # Collection is a Catalog subclass
            raise PreprocessError(f"STAC {self.url}: a STAC {type(root).__name__}, not a catalog, "
                                  "collection or API root")
        return root

    def _api_items(self, client: Any, collection: str, bounds: tuple[float, ...],
                   year: int) -> Iterator[Any]:
        try:
            col = client.get_collection(collection)
        except Exception as exc:
            raise PreprocessError(f"STAC API {self.url}: cannot get collection {collection!r} "
                                  f"({_short(exc)})") from None
        if col is None or col.id != collection:
            raise PreprocessError(f"STAC API {self.url}: no collection {collection!r}"
                                  f"{self._available(client)}")
        try:
            search = client.search(collections=[collection], bbox=list(bounds),
                                   datetime=f"{year}-01-01/{year}-12-31", limit=_SEARCH_LIMIT)
            yield from search.items()  # the modifier is applied by pystac_client
        except PreprocessError:
            raise
        except Exception as exc:
            raise PreprocessError(f"STAC API {self.url}: search of {collection!r} in {year} "
                                  f"failed ({_short(exc)})") from None

    def _available(self, client: Any) -> str:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ids = sorted(c.id for c in client.get_collections())
        except Exception:
            return ""
        more = f" and {len(ids) - 20} more" if len(ids) > 20 else ""
        return f"; it has {', '.join(ids[:20])}{more}" if ids else "; it has no collections"

    def _static_items(self, root: Any, collection: str, bounds: tuple[float, ...],
                      year: int) -> Iterator[Any]:
        import pystac

        try:
            found = list(_walk_collections(root))
        except Exception as exc:
            raise PreprocessError(f"STAC catalog {self.url}: cannot read its collections "
                                  f"({_short(exc)})") from None
        cols = [c for c in found if c.id == collection]
        if not cols:
            ids = sorted({c.id for c in found})
            raise PreprocessError(f"STAC catalog {self.url}: no collection {collection!r}; it has "
                                  f"{', '.join(ids) if ids else 'no collections'}")
        region = _lonlat_box(bounds)
        for col in cols:
            try:
                items = list(col.get_items(recursive=True))
            except Exception as exc:
                raise PreprocessError(f"STAC catalog {self.url}: cannot read the items of "
                                      f"{collection!r} ({_short(exc)})") from None
            for item in items:
                d = item_date(item)
                if d.year != year or not _footprint_intersects(item, region):
                    continue
                if self.modifier is not None:
                    res = self.modifier(item)
                    item = res if isinstance(res, pystac.Item) else item
                yield item


# --- items -> granules --------------------------------------------------------------------------

def item_date(item: Any) -> _dt.date:
    """The UTC date of an item: `datetime`, else `start_datetime`."""
    dt = item.datetime or item.common_metadata.start_datetime
    if dt is None:
        raise PreprocessError(f"STAC item {item.id}: neither datetime nor start_datetime")
    if dt.tzinfo is not None:
        dt = dt.astimezone(_dt.timezone.utc)
    return dt.date()


def item_to_granule(item: Any, sensor: str, collection: str) -> Granule:
    """Map one STAC item of a Sentinel-2 L2A or Sentinel-1 RTC collection to a `Granule`."""
    date = item_date(item)
    props = item.properties
    where = f"STAC item {item.id} ({collection}, {date})"
    keys = S2_ASSET_KEYS if sensor == "s2" else S1_ASSET_KEYS
    by_key = {k.lower(): (k, a) for k, a in item.assets.items()}
    assets = {}
    for band, candidates in keys.items():
        hit = next((by_key[c] for c in candidates if c in by_key), None)
        if hit is None:
            raise PreprocessError(f"{where}: no asset for band {band} (looked for "
                                  f"{' / '.join(candidates)}); its assets are "
                                  f"{', '.join(sorted(item.assets)) or 'none'}")
        key, asset = hit
        assets[band] = RasterAsset(_absolute_href(item, key, asset, where), nodata=_nodata(asset))
    source = item.get_self_href() or item.id
    bbox = _item_bbox(item)
    if sensor == "s1":
        orbit = str(props.get("sat:orbit_state") or "").lower()
        if orbit not in ("ascending", "descending"):
            raise PreprocessError(f"{where}: sat:orbit_state is {props.get('sat:orbit_state')!r}, "
                                  "expected ascending or descending")
        return Granule("s1", date, item.id, assets, orbit=orbit, s1_units="linear", bbox=bbox,
                       source=source)
    baseline = props.get("s2:processing_baseline")
    applied = props.get("earthsearch:boa_offset_applied")
    return Granule("s2", date, item.id, assets,
                   baseline=None if baseline is None else str(baseline),
                   boa_offset_applied=True if applied is True else None,
                   bbox=bbox, source=source)


def _absolute_href(item: Any, key: str, asset: Any, where: str) -> str:
    href = asset.get_absolute_href() or asset.href
    if not href or not (urlparse(href).scheme or href.startswith("/")):
        raise PreprocessError(f"{where}: asset {key} has the relative href {asset.href!r} and "
                              "the item has no location to resolve it against")
    return href


def _nodata(asset: Any) -> float | None:
    """`raster:bands[0].nodata`, else STAC 1.1 `bands[0].nodata` or the asset's `nodata`."""
    ef = asset.extra_fields
    for bands_key in ("raster:bands", "bands"):
        bands = ef.get(bands_key)
        if isinstance(bands, list) and bands and isinstance(bands[0], dict) \
                and bands[0].get("nodata") is not None:
            return float(bands[0]["nodata"])  # float("nan") for "nan" too
    if ef.get("nodata") is not None:
        return float(ef["nodata"])
    return None


def _item_bbox(item: Any) -> tuple[float, float, float, float] | None:
    b = item.bbox
    if b and len(b) in (4, 6):  # 2D, or 3D [w, s, zmin, e, n, zmax]
        w, s, e, n = (b[0], b[1], b[2], b[3]) if len(b) == 4 else (b[0], b[1], b[3], b[4])
        return (float(w), float(s), float(e), float(n))
    if item.geometry:
        from shapely.geometry import shape
        w, s, e, n = shape(item.geometry).bounds
        return (float(w), float(s), float(e), float(n))
    return None


def _lonlat_box(bounds: tuple[float, ...]) -> Any:
    from shapely.geometry import box
    return box(*bounds)


def _footprint_intersects(item: Any, region: Any) -> bool:
    """The item's geometry (else bbox) intersects the region's lon/lat bounds, as an API's
    `bbox` search decides."""
    from shapely.geometry import box, shape
    if item.geometry:
        try:
            return bool(shape(item.geometry).intersects(region))
        except Exception:  # an invalid footprint: fall back to its bbox
            pass
    b = _item_bbox(item)
    return True if b is None else bool(box(*b).intersects(region))


def _walk_collections(root: Any) -> Iterable[Any]:
    """Every Collection reachable from `root` through child links (root included)."""
    import pystac
    seen: set[int] = set()  # pystac resolves each link once: a cycle revisits the same object
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, pystac.Collection):
            yield node
        stack.extend(node.get_children())


def _stac_io(timeout: float | None) -> Any:
    """pystac's DefaultStacIO with a requests session (connection reuse, a timeout, errors that
    name the status) for the http(s) hrefs of static catalogs."""
    import requests
    from pystac.stac_io import DefaultStacIO

    session = requests.Session()

    class _StacIO(DefaultStacIO):
        def read_text_from_href(self, href: str) -> str:
            if urlparse(href).scheme not in ("http", "https"):
                return super().read_text_from_href(href)
            r = session.get(href, timeout=timeout)
            if r.status_code >= 400:
                raise OSError(f"GET {href}: HTTP {r.status_code} {r.reason}")
            return r.text

    return _StacIO()


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = text.splitlines()[0] if text else text
    return text if len(text) <= 300 else text[:297] + "..."
