//! Which frames an epoch pays for: ISO weeks by default (`2026-W47`), or any
//! RFC 3339 interval `START/END`, closing a grace period after its end so
//! late uploads of its drives still count.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};

/// An epoch: its id as written, and the half-open interval it pays for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub id: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Epoch {
    /// `2026-W47` (ISO week, Monday 00:00 UTC to the next Monday) or
    /// `2026-11-24T00:00:00Z/2026-11-25T00:00:00Z`.
    pub fn parse(id: &str) -> Result<Self, String> {
        if let Some((start, end)) = id.split_once('/') {
            let parse = |s: &str| {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| format!("epoch {id:?}: {s:?} is not an RFC 3339 time: {e}"))
            };
            let (start, end) = (parse(start)?, parse(end)?);
            if end <= start {
                return Err(format!("epoch {id:?} ends before it starts"));
            }
            return Ok(Self::from_interval(start, end));
        }
        let bad = || {
            format!("epoch {id:?}: expected an ISO week like 2026-W47, or START/END in RFC 3339")
        };
        let (year, week) = id.split_once("-W").ok_or_else(bad)?;
        let year: i32 = year.parse().map_err(|_| bad())?;
        let week: u32 = week.parse().map_err(|_| bad())?;
        let monday = NaiveDate::from_isoywd_opt(year, week, Weekday::Mon)
            .ok_or_else(|| format!("epoch {id:?}: {year} has no ISO week {week}"))?;
        let start = monday.and_hms_opt(0, 0, 0).ok_or_else(bad)?.and_utc();
        Ok(Self {
            id: format!("{year}-W{week:02}"),
            start,
            end: start + Duration::days(7),
        })
    }

    /// The epoch of `[start, end)` under its one canonical id: the ISO week
    /// when it is one, else both ends in UTC to the second. Every way of
    /// writing an interval names the same epoch, so it is paid once.
    pub fn from_interval(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        let week = Self::week_of(start);
        if week.start == start && week.end == end {
            return week;
        }
        let text = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        Self {
            id: format!("{}/{}", text(start), text(end)),
            start,
            end,
        }
    }

    /// Whether the two epochs pay for any instant twice.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Refuses an epoch that overlaps one already paid (a different
    /// interval; the same one is a rerun, which pays nothing new).
    pub fn check_against_paid<'a>(
        &self,
        paid: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        for id in paid {
            let Ok(other) = Self::parse(id) else { continue };
            if other.id != self.id && self.overlaps(&other) {
                return Err(format!(
                    "epoch {} overlaps epoch {}, already paid: an instant is paid once",
                    self.id, other.id
                ));
            }
        }
        Ok(())
    }

    /// The ISO week containing `t`.
    pub fn week_of(t: DateTime<Utc>) -> Self {
        let w = t.iso_week();
        // Every ISO week a time falls in exists.
        Self::parse(&format!("{}-W{:02}", w.year(), w.week())).expect("an existing ISO week")
    }

    /// When the epoch closes: its end plus `grace`. Its ledger is computed
    /// from the tables as they were then.
    pub fn close(&self, grace: Duration) -> DateTime<Utc> {
        self.end + grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: idempotence was keyed on the id as written, so a week and
    /// the same interval in RFC 3339 paid the same week twice.
    #[test]
    fn every_spelling_of_an_epoch_is_one_id() {
        let week = Epoch::parse("2026-W47").unwrap();
        for spelling in [
            "2026-11-16T00:00:00Z/2026-11-23T00:00:00Z",
            "2026-11-16T02:00:00+02:00/2026-11-23T00:00:00.000Z",
        ] {
            assert_eq!(Epoch::parse(spelling).unwrap(), week, "{spelling}");
        }
        let day = Epoch::parse("2026-11-24T01:00:00+01:00/2026-11-25T00:00:00Z").unwrap();
        assert_eq!(day.id, "2026-11-24T00:00:00Z/2026-11-25T00:00:00Z");
        assert_eq!(Epoch::parse(&day.id).unwrap(), day);
    }

    /// Issue 15: overlapping intervals both paid.
    #[test]
    fn an_epoch_overlapping_a_paid_one_is_refused() {
        let day = Epoch::parse("2026-11-17T00:00:00Z/2026-11-18T00:00:00Z").unwrap();
        let e = day.check_against_paid(["2026-W47"]).unwrap_err();
        assert!(e.contains("overlaps epoch 2026-W47"), "{e}");
        assert!(
            day.check_against_paid([day.id.as_str(), "2026-W48", "junk"])
                .is_ok()
        );
        let next = Epoch::parse("2026-11-23T00:00:00Z/2026-11-24T00:00:00Z").unwrap();
        assert!(next.check_against_paid(["2026-W47"]).is_ok(), "half-open");
    }

    #[test]
    fn iso_weeks_start_on_monday_utc() {
        let e = Epoch::parse("2026-W47").unwrap();
        assert_eq!(e.start.to_rfc3339(), "2026-11-16T00:00:00+00:00");
        assert_eq!(e.end.to_rfc3339(), "2026-11-23T00:00:00+00:00");
        // ISO 2027-W01 begins in 2027 (Jan 4 2027 is a Monday).
        assert_eq!(
            Epoch::parse("2027-W01").unwrap().start.to_rfc3339(),
            "2027-01-04T00:00:00+00:00"
        );
        assert_eq!(Epoch::week_of(e.start + Duration::hours(30)), e);
    }

    #[test]
    fn intervals_and_bad_ids() {
        let e = Epoch::parse("2026-11-24T00:00:00Z/2026-11-24T06:00:00Z").unwrap();
        assert_eq!((e.end - e.start).num_hours(), 6);
        assert!(
            Epoch::parse("2026-W54")
                .unwrap_err()
                .contains("no ISO week")
        );
        assert!(Epoch::parse("last week").unwrap_err().contains("ISO week"));
        assert!(
            Epoch::parse("2026-11-24T06:00:00Z/2026-11-24T00:00:00Z")
                .unwrap_err()
                .contains("ends before")
        );
    }
}
