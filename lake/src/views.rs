//! Views for the questions analysts ask first, registered in every session
//! beside the tables. Coverage is counted on resolution-10 cells (about 66 m
//! edges, roughly a block face), from published frames only.

/// `(name, SELECT …)`, in dependency order.
pub const VIEWS: &[(&str, &str)] = &[
    (
        "coverage",
        "SELECT h3_cell_to_parent(cell, 10) AS cell, min(ts) AS first_seen, \
         max(ts) AS last_seen, count(*) AS frames, \
         count(DISTINCT contributor_id) AS contributors \
         FROM frames WHERE image_key IS NOT NULL \
         GROUP BY h3_cell_to_parent(cell, 10)",
    ),
    (
        "freshness",
        "SELECT cell, last_seen, frames, contributors, \
         (date_part('epoch', now()) - date_part('epoch', last_seen)) / 86400.0 AS age_days \
         FROM coverage",
    ),
    (
        "fleet",
        "WITH latest AS ( \
           SELECT device_id, contributor_id, status, make, model, registered_at, \
                  row_number() OVER (PARTITION BY device_id ORDER BY changed_at DESC) AS n \
           FROM devices), \
         fixes AS ( \
           SELECT device_id, ts, lat, lon, \
                  lag(lat) OVER (PARTITION BY upload_id ORDER BY ts) AS plat, \
                  lag(lon) OVER (PARTITION BY upload_id ORDER BY ts) AS plon \
           FROM gnss), \
         driven AS ( \
           SELECT device_id, max(ts) AS last_fix, \
                  sum(2 * 6371008.8 * asin(sqrt( \
                      power(sin(radians(lat - plat) / 2), 2) \
                      + cos(radians(plat)) * cos(radians(lat)) \
                        * power(sin(radians(lon - plon) / 2), 2)))) AS metres \
           FROM fixes WHERE plat IS NOT NULL GROUP BY device_id), \
         received AS ( \
           SELECT device_id, count(*) AS uploads, \
                  sum(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS rejections, \
                  max(received_at) AS last_upload \
           FROM uploads GROUP BY device_id) \
         SELECT l.device_id, l.contributor_id, l.status, l.make, l.model, l.registered_at, \
                greatest(r.last_upload, d.last_fix) AS last_seen, \
                COALESCE(d.metres, 0) / 1000.0 AS km_driven, \
                COALESCE(r.uploads, 0) AS uploads, COALESCE(r.rejections, 0) AS rejections \
         FROM latest l \
         LEFT JOIN received r ON l.device_id = r.device_id \
         LEFT JOIN driven d ON l.device_id = d.device_id \
         WHERE l.n = 1",
    ),
];
