"""Where a visitor is: a GeoIP2 / GeoLite2 City database, read with MaxMind's geoip2 library.

The locator never raises for an address it cannot place: no database, a private address or
one the database does not know all come back as an `Unlocated` with the reason, and
placement falls back to the region and then to load alone.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import geoip2.database
import geoip2.errors

__all__ = ["EARTH_RADIUS_KM", "GeoPoint", "Locator", "Unlocated", "haversine_km"]

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0088  # the mean radius (IUGG)
_RAD = math.pi / 180


@dataclass(frozen=True)
class GeoPoint:
    """A place on Earth, with a label for people (e.g. "Amsterdam, NL")."""

    latitude: float
    longitude: float
    label: str = ""


@dataclass(frozen=True)
class Unlocated:
    """Why an address has no place."""

    reason: str


def haversine_km(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance between two points, in kilometres."""
    lat1, lat2 = a.latitude * _RAD, b.latitude * _RAD
    sin_dlat = math.sin((lat2 - lat1) / 2)
    sin_dlon = math.sin((b.longitude - a.longitude) * _RAD / 2)
    h = sin_dlat * sin_dlat + math.cos(lat1) * math.cos(lat2) * sin_dlon * sin_dlon
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


class Locator:
    """Addresses to places, with a bounded cache (one visitor makes many sandboxes)."""

    def __init__(self, database: Path | None, cache_size: int = 65536) -> None:
        self.database = database
        self._reader: geoip2.database.Reader | None = None
        if database is not None:
            # Opened once: the reader memory-maps the file and is safe to share.
            self._reader = geoip2.database.Reader(str(database))
            meta = self._reader.metadata()
            log.info(
                "GeoIP database %s: %s, built %d",
                database,
                meta.database_type,
                meta.build_epoch,
            )
        self.locate = functools.lru_cache(maxsize=cache_size)(self._locate)

    def _locate(self, address: str) -> GeoPoint | Unlocated:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return Unlocated(f"{address!r} is not an IP address")
        if not ip.is_global:
            return Unlocated(f"{address} is a private or reserved address")
        if self._reader is None:
            return Unlocated("the operator has no GeoIP database")
        try:
            found = self._reader.city(str(ip))
        except geoip2.errors.AddressNotFoundError:
            return Unlocated(f"{address} is not in the GeoIP database")
        latitude, longitude = found.location.latitude, found.location.longitude
        if latitude is None or longitude is None:
            return Unlocated(f"the GeoIP database has no coordinates for {address}")
        label = ", ".join(p for p in (found.city.name, found.country.iso_code) if p)
        return GeoPoint(latitude, longitude, label or "unnamed place")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
