"""Reference answers from Uber's h3 library (PyPI) for the points in IN_JSON,
written to OUT_JSON. Used by lake/tests/h3_functions.rs."""
import json
import sys

import h3

points = json.load(open(sys.argv[1]))
out = []
for lat, lng, res in points:
    c = h3.latlng_to_cell(lat, lng, res)
    clat, clng = h3.cell_to_latlng(c)
    row = {
        "cell": h3.str_to_int(c),
        "string": c,
        "lat": clat,
        "lng": clng,
        "res": h3.get_resolution(c),
        "parent": h3.str_to_int(h3.cell_to_parent(c, res - 1)) if res > 0 else None,
        "children": sorted(h3.str_to_int(x) for x in h3.cell_to_children(c, res + 1)) if res < 15 else None,
        "disk": sorted(h3.str_to_int(x) for x in h3.grid_disk(c, 2)),
        "area_km2": h3.cell_area(c, unit="km^2"),
        "area_m2": h3.cell_area(c, unit="m^2"),
        "boundary": [[p[0], p[1]] for p in h3.cell_to_boundary(c)],
    }
    # Near pentagons the library cannot always answer: then it has no distance.
    try:
        far = sorted(h3.grid_ring(c, 3))[0]
    except h3.H3BaseException:
        far = c
    row["ring_cell"] = h3.str_to_int(far)
    try:
        row["ring_distance"] = h3.grid_distance(c, far)
    except h3.H3BaseException:
        row["ring_distance"] = None
    out.append(row)
json.dump(out, open(sys.argv[2], "w"))
