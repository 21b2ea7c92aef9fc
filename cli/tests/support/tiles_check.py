"""Checks hexroad's tiles with independent readers: `mapbox-vector-tile`
decodes them, `h3` places the hexagons, `pmtiles` opens the export.

    tiles_check.py BASE COVERAGE.json FRAMES.json ARCHIVE.pmtiles

COVERAGE.json is `hexroad sql`'s answer to SELECT cell, frames,
contributors FROM coverage; FRAMES.json to SELECT frame_id, lat, lon FROM
frames WHERE image_key IS NOT NULL. Exits non-zero naming the first
mismatch; prints a JSON summary.
"""

import gzip
import json
import math
import sys
import urllib.error
import urllib.request

import h3
import mapbox_vector_tile
from pmtiles.reader import MmapSource, Reader, all_tiles

EXTENT = 4096
BUFFER = 64
Z = 15


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def world(lat, lon, z):
    n = 2**z
    la = math.radians(lat)
    x = (lon + 180.0) / 360.0 * n
    y = (1.0 - math.log(math.tan(la) + 1.0 / math.cos(la)) / math.pi) / 2.0 * n
    return x, y


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def decode(data):
    return mapbox_vector_tile.decode(data, default_options={"y_coord_down": True})


tile_cache = {}


def tile(base, z, x, y):
    if (z, x, y) not in tile_cache:
        status, _, body = get(f"{base}/tiles/{z}/{x}/{y}.mvt")
        if status != 200:
            fail(f"/tiles/{z}/{x}/{y}.mvt answered {status}")
        tile_cache[(z, x, y)] = decode(body)
    return tile_cache[(z, x, y)]


def comparable(decoded):
    """A tile's content without freshness_days, which moves with the clock."""
    out = {}
    for name, layer in decoded.items():
        feats = []
        for f in layer["features"]:
            props = {k: v for k, v in f["properties"].items() if k != "freshness_days"}
            feats.append(json.dumps([f["geometry"], props], sort_keys=True))
        out[name] = sorted(feats)
    return out


def main():
    base, coverage_path, frames_path, archive = sys.argv[1:5]
    coverage = json.load(open(coverage_path))
    frames = json.load(open(frames_path))
    if not coverage:
        fail("no coverage to check")

    # Every coverage cell SQL reports is in every z15 tile it reaches, with
    # SQL's counts; whole hexagons sit where H3 puts them.
    whole, placements = 0, 0
    worst = 0.0
    for row in coverage:
        cell = int(row["cell"])
        lat, lng = h3.cell_to_latlng(h3.int_to_str(cell))
        points = [(lat, lng)] + [
            # Vertices pulled 5% toward the centre: inside the hexagon.
            (lat + 0.95 * (vlat - lat), lng + 0.95 * (vlng - lng))
            for vlat, vlng in h3.cell_to_boundary(h3.int_to_str(cell))
        ]
        tiles = {tuple(int(v) for v in world(a, b, Z)) for a, b in points}
        for x, y in tiles:
            decoded = tile(base, Z, x, y)
            found = [
                f
                for f in decoded.get("coverage", {"features": []})["features"]
                if f["properties"]["cell"] == str(cell)
            ]
            if not found:
                fail(f"cell {cell} is missing from tile {Z}/{x}/{y}")
            props = found[0]["properties"]
            if props["frames"] != row["frames"] or props["contributors"] != row["contributors"]:
                fail(f"cell {cell} in {Z}/{x}/{y}: tile {props}, SQL {row}")
            if props["res"] != 10:
                fail(f"cell {cell}: res {props['res']} at z{Z}")
            placements += 1
            ring = found[0]["geometry"]["coordinates"][0]
            if ring[0] == ring[-1]:
                ring = ring[:-1]
            if len(ring) == 6 and all(0 <= px <= EXTENT and 0 <= py <= EXTENT for px, py in ring):
                whole += 1
                fx, fy = world(lat, lng, Z)
                cx, cy = (fx - x) * EXTENT, (fy - y) * EXTENT
                mx = sum(p[0] for p in ring) / 6
                my = sum(p[1] for p in ring) / 6
                d = math.hypot(mx - cx, my - cy)
                worst = max(worst, d)
                if d > 2.0:
                    fail(f"cell {cell} in {Z}/{x}/{y}: centre {d:.2f} px from H3's")
    if whole == 0:
        fail("no whole hexagon at z15 to check against H3")

    # Published frames are points from z14 and their images are served.
    opened = 0
    for row in frames[:5]:
        x, y = (int(v) for v in world(row["lat"], row["lon"], 16))
        decoded = tile(base, 16, x, y)
        found = [
            f
            for f in decoded.get("frames", {"features": []})["features"]
            if f["properties"]["frame_id"] == row["frame_id"]
        ]
        if not found:
            fail(f"frame {row['frame_id']} missing from 16/{x}/{y}")
        status, headers, body = get(base + found[0]["properties"]["image_url"])
        if status != 200 or headers.get("content-type") != "image/jpeg" or body[:2] != b"\xff\xd8":
            fail(f"{found[0]['properties']['image_url']}: {status} {headers.get('content-type')}")
        opened += 1

    # HTTP: gzip on request, ETag revalidation, clear 404s, nothing raw.
    _, x, y = next(k for k in tile_cache if k[0] == Z)
    url = f"{base}/tiles/{Z}/{x}/{y}.mvt"
    status, headers, plain = get(url)
    status_gz, headers_gz, zipped = get(url, {"Accept-Encoding": "gzip"})
    if headers_gz.get("content-encoding") != "gzip" or gzip.decompress(zipped) != plain:
        fail(f"{url}: gzip not honoured: {headers_gz}")
    etag = headers.get("etag")
    if not etag or "max-age" not in headers.get("cache-control", ""):
        fail(f"{url}: no ETag or Cache-Control: {headers}")
    status, _, _ = get(url, {"If-None-Match": etag})
    if status != 304:
        fail(f"{url} with If-None-Match answered {status}")
    for path in [
        "/tiles/3/9/0.mvt",
        "/tiles/a/b/c.mvt",
        "/frames/00000000-0000-0000-0000-000000000000.jpg",
        "/frames/..%2F..%2Fraw%2Fx.jpg",
        "/raw/x",
    ]:
        status, _, _ = get(base + path)
        if status != 404:
            fail(f"{path} answered {status}, not 404")

    doc = json.loads(get(base + "/tiles.json")[2])
    if doc.get("tilejson") != "3.0.0" or sorted(l["id"] for l in doc["vector_layers"]) != [
        "coverage",
        "frames",
        "tracks",
    ]:
        fail(f"TileJSON: {doc}")

    # The PMTiles export, read with the pmtiles package, holds what the
    # server serves.
    with open(archive, "rb") as f:
        reader = Reader(MmapSource(f))
        header = reader.header()
        archived = {}
        for (z, x, y), data in all_tiles(reader.get_bytes):
            archived[(z, x, y)] = data
    for (z, x, y), data in archived.items():
        ours = decode(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        served = tile(base, z, x, y)
        if comparable(ours) != comparable(served):
            fail(f"archive tile {z}/{x}/{y} differs from the server's")
    for key in tile_cache:
        if key[0] == Z and tile_cache[key].get("coverage") and key not in archived:
            fail(f"server tile {key} with coverage is not in the archive")

    print(
        json.dumps(
            {
                "cells": len(coverage),
                "placements": placements,
                "whole_hexagons": whole,
                "worst_centre_px": worst,
                "frames_opened": opened,
                "archive_tiles": len(archived),
                "archive_zooms": [header["min_zoom"], header["max_zoom"]],
            }
        )
    )


if __name__ == "__main__":
    main()
