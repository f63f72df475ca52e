#!/usr/bin/env python3
"""Generate src/tz/data.rs: phone-prefix -> IANA time zone, and NANP prefix -> subdivision.

Usage (from the repository root):

    python3 -m venv /tmp/tzgen && /tmp/tzgen/bin/pip install phonenumbers==9.0.43 tzdata==2026.6
    /tmp/tzgen/bin/python3 src/tz/generate.py            # rewrites src/tz/data.rs
    /tmp/tzgen/bin/python3 src/tz/generate.py --check    # exit 1 if data.rs is stale
    /tmp/tzgen/bin/python3 src/tz/generate.py --stdout   # print instead

The file is written next to this script, and only once generation has succeeded (a shell
redirect would leave it empty when the pins do not match). The output is a pure function
of the two pinned packages, so re-running it produces a byte-identical file, already in
rustfmt's layout. To move to newer data, bump PHONENUMBERS_VERSION / TZDATA_VERSION
below, install those versions, regenerate, and run the tz tests (they check that every zone
resolves in jiff's bundled tz database and that merged zones really are equivalent).

Sources:
* phonenumbers (PyPI), the Python port of Google's libphonenumber, Apache-2.0:
  `phonenumbers.tzdata` is libphonenumber's resources/timezones/map_data.txt and
  `phonenumbers.geodata` its English geocoding data (used for +1 only).
* tzdata (PyPI), the IANA time zone database, public domain: its `tzdata.zi` tells which
  names are links to the same zone, and `zone.tab` which country each current name is for.

What the conversion does, and why:
* Names in one prefix's list that are tzdb links to the same zone (Europe/London,
  Europe/Jersey, Europe/Guernsey, Europe/Isle_of_Man) are merged into one, because for the
  purpose of a local clock they are the same zone; otherwise every UK number would look
  ambiguous. The kept name is the one for the calling code's main country when there is one
  (Europe/London for +44, Europe/Oslo rather than Arctic/Longyearbyen for +47), else the
  canonical zone. Deprecated names (America/Godthab, Pacific/Truk) are replaced by a current
  equivalent the same way. Every merge is listed in MERGED so a test can check it with jiff.
* Geocoder names for +1 ("Florida", "Miami, FL", "Washington D.C.") become ISO 3166-2
  codes (US-FL, US-DC, CA-ON). Names that are not a US state or Canadian province
  ("New Providence", "Nova Scotia/Prince Edward Island") give no subdivision, so the
  prefix inherits its parent's. The US territories with their own area codes (PR, GU, VI,
  AS, MP) come from the number metadata instead, since the geocoder has no name for them.
  An area code with no name of its own whose named exchanges all agree gets their
  subdivision. Entries that say the same as their parent prefix are then dropped to keep
  the table small.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import os
import re
import sys
from pathlib import Path

try:
    import phonenumbers
    from phonenumbers.geodata import GEOCODE_DATA
    from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX
except ImportError:
    sys.exit("generate.py needs: pip install phonenumbers==9.0.43 tzdata==2026.6")

PHONENUMBERS_VERSION = "9.0.43"
TZDATA_VERSION = "2026.6"
OUTPUT = Path(__file__).resolve().parent / "data.rs"

UNKNOWN_ZONE = "Etc/Unknown"

US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "District of Columbia": "DC",
    "Florida": "FL", "Georgia": "GA", "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL",
    "Indiana": "IN", "Iowa": "IA", "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA",
    "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA", "Michigan": "MI",
    "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT",
    "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ",
    "New Mexico": "NM", "New York": "NY", "North Carolina": "NC", "North Dakota": "ND",
    "Ohio": "OH", "Oklahoma": "OK", "Oregon": "OR", "Pennsylvania": "PA",
    "Rhode Island": "RI", "South Carolina": "SC", "South Dakota": "SD", "Tennessee": "TN",
    "Texas": "TX", "Utah": "UT", "Vermont": "VT", "Virginia": "VA", "Washington": "WA",
    "West Virginia": "WV", "Wisconsin": "WI", "Wyoming": "WY",
    # Territories that ISO 3166-2:US lists as subdivisions.
    "American Samoa": "AS", "Guam": "GU", "Northern Mariana Islands": "MP",
    "Puerto Rico": "PR", "U.S. Virgin Islands": "VI",
    # Spellings the geocoder uses.
    "Washington State": "WA", "Washington D.C.": "DC",
}
CA_PROVINCES = {
    "Alberta": "AB", "British Columbia": "BC", "Manitoba": "MB", "New Brunswick": "NB",
    "Newfoundland and Labrador": "NL", "Nova Scotia": "NS", "Northwest Territories": "NT",
    "Nunavut": "NU", "Ontario": "ON", "Prince Edward Island": "PE", "Quebec": "QC",
    "Saskatchewan": "SK", "Yukon": "YT",
    # Spelling the geocoder uses.
    "British Colombia": "BC",
}
US_TERRITORY_REGIONS = ("AS", "GU", "MP", "PR", "VI")


def subdivision_of_name(name: str) -> str | None:
    for country, table in (("US", US_STATES), ("CA", CA_PROVINCES)):
        if name in table:
            return f"{country}-{table[name]}"
    match = re.fullmatch(r".+, ([A-Z]{2})", name)
    if match:
        code = match.group(1)
        for country, table in (("US", US_STATES), ("CA", CA_PROVINCES)):
            if code in table.values():
                return f"{country}-{code}"
    return None


def read_tzdb() -> tuple[set[str], dict[str, str], dict[str, str]]:
    """Zones, link -> target, and current name -> zone.tab country."""
    files = importlib.resources.files("tzdata.zoneinfo")
    zones: set[str] = set()
    links: dict[str, str] = {}
    for line in files.joinpath("tzdata.zi").read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and fields[0] == "Z":
            zones.add(fields[1])
        elif fields and fields[0] == "L":
            links[fields[2]] = fields[1]
    country: dict[str, str] = {}
    for line in files.joinpath("zone.tab").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            fields = line.split("\t")
            country[fields[2]] = fields[0]
    return zones, links, country


def calling_code_of(prefix: str) -> int | None:
    for length in (1, 2, 3):
        code = int(prefix[:length])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return code
    return None


def resolve_zones(prefix: str, names, tzdb, merged: set[tuple[str, str]]) -> tuple[str, ...]:
    zones, links, country = tzdb
    code = calling_code_of(prefix)
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ()) if code else ()
    main = regions[0] if regions else None
    members_of: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        if name == UNKNOWN_ZONE:
            continue
        members_of.setdefault(links.get(name, name), []).append(name)

    def preference(name: str):
        where = country.get(name)
        return (
            where != main,
            name not in zones,
            regions.index(where) if where in regions else len(regions),
            name,
        )

    chosen = []
    for target, listed in members_of.items():
        pool = [n for n in listed if n in country]
        if not pool:
            every = [target] + sorted(link for link, t in links.items() if t == target)
            pool = [n for n in every if n in country] or listed
        keep = min(pool, key=preference)
        chosen.append(keep)
        merged.update((name, keep) for name in listed if name != keep)
    return tuple(sorted(set(chosen)))


def nanp_subdivisions() -> dict[str, str]:
    raw: dict[str, str | None] = {}
    for prefix, names in GEOCODE_DATA.items():
        if prefix.startswith("1") and "en" in names:
            raw[prefix] = subdivision_of_name(names["en"])
    for region in US_TERRITORY_REGIONS:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        for area_code in metadata.leading_digits.split("|"):
            if not re.fullmatch(r"[2-9][0-9]{2}", area_code):
                sys.exit(f"unexpected leading digits {metadata.leading_digits!r} for {region}")
            raw.setdefault("1" + area_code, f"US-{region}")
    known = {prefix: value for prefix, value in raw.items() if value is not None}

    # Many area codes (310, 203, …) only have per-exchange names. An area code lies within
    # one state or province, so when every exchange the data names agrees, the area code
    # as a whole gets that subdivision; this also covers exchanges the data does not name.
    by_area: dict[str, set[str]] = {}
    for prefix, value in known.items():
        if len(prefix) > 4:
            by_area.setdefault(prefix[:4], set()).add(value)
    for area, values in by_area.items():
        if area not in known and len(values) == 1:
            known[area] = next(iter(values))

    def parent_value(prefix: str) -> str | None:
        for length in range(len(prefix) - 1, 0, -1):
            if prefix[:length] in known:
                return known[prefix[:length]]
        return None

    return {p: v for p, v in known.items() if v != parent_value(p)}


def check_versions() -> None:
    found = {
        "phonenumbers": importlib.metadata.version("phonenumbers"),
        "tzdata": importlib.metadata.version("tzdata"),
    }
    wanted = {"phonenumbers": PHONENUMBERS_VERSION, "tzdata": TZDATA_VERSION}
    if found != wanted:
        sys.exit(
            f"generate.py: found {found}, pinned {wanted}; install the pinned versions, "
            "or bump the pins at the top of this script to move to new data"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help=f"compare with {OUTPUT.name}")
    mode.add_argument("--stdout", action="store_true", help="print instead of writing")
    args = parser.parse_args()
    check_versions()
    text = generate()
    if args.stdout:
        sys.stdout.write(text)
    elif args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            sys.exit(f"{OUTPUT} is stale: run src/tz/generate.py")
    else:
        temporary = OUTPUT.with_suffix(".rs.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, OUTPUT)


def generate() -> str:
    tzdb = read_tzdb()
    merged: set[tuple[str, str]] = set()
    prefixes = {
        prefix: resolve_zones(prefix, names, tzdb, merged)
        for prefix, names in TIMEZONE_DATA.items()
    }
    if any(not p.isdigit() or p[0] == "0" or len(p) > 9 for p in prefixes):
        sys.exit("a prefix does not fit the u32 key (digits, no leading zero, at most 9)")
    zone_sets = sorted(set(prefixes.values()))
    set_index = {zones: i for i, zones in enumerate(zone_sets)}
    calling_codes = {str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}
    subdivisions = nanp_subdivisions()

    out = []
    emit = out.append
    emit("// @generated by src/tz/generate.py; do not edit.")
    emit("// Regenerate: python3 src/tz/generate.py (see the script for the pinned packages).")
    emit("//")
    emit(f"// From the PyPI package phonenumbers {PHONENUMBERS_VERSION}: libphonenumber's")
    emit("// time zone map (resources/timezones/map_data.txt) and English geocoding data for +1.")
    emit("// Copyright (C) The Libphonenumber Authors. Licensed under the Apache License,")
    emit("// Version 2.0: http://www.apache.org/licenses/LICENSE-2.0")
    emit(f"// Zone links and zone.tab from the PyPI package tzdata {TZDATA_VERSION} (IANA tz")
    emit("// database, public domain).")
    emit("")
    emit(f'pub const PHONENUMBERS_VERSION: &str = "{PHONENUMBERS_VERSION}";')
    emit(f'pub const TZDATA_VERSION: &str = "{TZDATA_VERSION}";')
    emit("")
    emit("/// Longest prefix in [`PREFIXES`], in digits.")
    emit(f"pub const LONGEST_PREFIX: usize = {TIMEZONE_LONGEST_PREFIX};")
    emit("/// Longest prefix in [`NANP_SUBDIVISIONS`], in digits.")
    emit(f"pub const NANP_LONGEST_PREFIX: usize = {max(len(p) for p in subdivisions)};")
    emit("")
    emit("/// Each distinct list of zones, sorted by name; [`PREFIXES`] points into this.")
    emit("pub static ZONE_SETS: &[&[&str]] = &[")
    for zones in zone_sets:
        emit_array(emit, zones)
    emit("];")
    emit("")
    emit("/// (prefix digits as a number, index into [`ZONE_SETS`], prefix is a calling code),")
    emit("/// sorted by prefix. No prefix starts with 0, so the number identifies the digits.")
    emit("pub static PREFIXES: &[(u32, u16, bool)] = &[")
    for prefix in sorted(prefixes, key=int):
        emit(f"    ({prefix}, {set_index[prefixes[prefix]]}, {str(prefix in calling_codes).lower()}),")
    emit("];")
    emit("")
    emit("/// (prefix digits as a number, ISO 3166-2 subdivision), sorted by prefix; +1 only.")
    emit("pub static NANP_SUBDIVISIONS: &[(u32, &str)] = &[")
    for prefix in sorted(subdivisions, key=int):
        emit(f'    ({prefix}, "{subdivisions[prefix]}"),')
    emit("];")
    emit("")
    emit("/// (upstream name, name kept instead): the same zone under a tzdb link, merged.")
    emit("#[cfg(test)]")
    emit("pub static MERGED: &[(&str, &str)] = &[")
    for upstream, kept in sorted(merged):
        emit(f'    ("{upstream}", "{kept}"),')
    emit("];")
    return "\n".join(out) + "\n"


def emit_array(emit, zones: tuple[str, ...]) -> None:
    """One ZONE_SETS element, laid out the way rustfmt would lay it out."""
    items = ", ".join(f'"{z}"' for z in zones)
    one_line = f"    &[{items}],"
    # rustfmt keeps an array on one line while it is within array_width (60% of the
    # 100-column max_width) and the line fits; otherwise one element per line.
    if len(items) <= 60 and len(one_line) <= 100:
        emit(one_line)
        return
    emit("    &[")
    for zone in zones:
        emit(f'        "{zone}",')
    emit("    ],")


if __name__ == "__main__":
    main()
