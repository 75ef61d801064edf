//! The fleet's expiry forecast: of the devices seen recently, how many
//! have a current certificate that expires this week, this month and in
//! each month of the coming year, and which of them expire soon with no
//! renewal in sight. Computed from the writer's records.

use serde::{Deserialize, Serialize};

use super::{Device, DeviceStatus};

/// Devices seen within this long count as active for the gauge.
pub(crate) const GAUGE_ACTIVE_WITHIN: i64 = 30 * 86_400;
/// The at-risk list: current certificate expiring within this long.
pub(crate) const AT_RISK_WITHIN: i64 = 30 * 86_400;
/// The windows of `certgate_device_certificates_expiring{within}`.
pub(crate) const GAUGE_WINDOWS: [i64; 3] = [7 * 86_400, 30 * 86_400, 90 * 86_400];

/// The forecast (`certgate devices expiry`, `GET /api/devices/expiry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// When it was computed, Unix seconds.
    pub now: i64,
    /// Devices count when seen within this many days.
    pub active_days: i64,
    /// Active devices that are not blocked.
    pub active: usize,
    /// Of those, whose current certificate has already expired.
    pub expired: usize,
    /// Expiring within 7 days.
    pub within_7_days: usize,
    /// Expiring within 30 days.
    pub within_30_days: usize,
    /// By calendar month (UTC) of expiry, from this month for a year.
    pub months: Vec<Month>,
    /// Expiring after the last month listed.
    pub later: usize,
    /// Active devices whose current certificate expires within 30 days
    /// (or has expired) and that have no successor yet, soonest first.
    pub at_risk: Vec<AtRisk>,
}

/// Devices whose certificate expires in one calendar month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Month {
    /// `YYYY-MM`.
    pub month: String,
    /// How many.
    pub devices: usize,
}

/// A device at risk of dropping out when its certificate expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtRisk {
    /// The device id.
    pub id: String,
    /// Its status.
    pub status: DeviceStatus,
    /// The current certificate.
    pub fingerprint: String,
    /// Its subject.
    pub subject: String,
    /// Its expiry, Unix seconds.
    pub not_after: i64,
    /// The device's latest handshake.
    pub last_seen: Option<i64>,
    /// The administrator's label.
    pub label: Option<String>,
}

/// The device's latest handshake, any certificate.
fn last_seen(d: &Device) -> Option<i64> {
    d.certificates.iter().filter_map(|c| c.last_seen).max()
}

/// The forecast of `devices` at `now`, counting devices seen within
/// `active_within` seconds.
pub(crate) fn forecast<'a>(
    devices: impl Iterator<Item = &'a Device>,
    now: i64,
    active_within: i64,
) -> Forecast {
    let this_month = month_start(now);
    let mut months: Vec<(i64, Month)> = (0..12)
        .scan(this_month, |start, _| {
            let s = *start;
            *start = next_month(s);
            Some((
                s,
                Month {
                    month: month_name(s),
                    devices: 0,
                },
            ))
        })
        .collect();
    let end_of_year = months.last().map_or(now, |(s, _)| next_month(*s));
    let mut f = Forecast {
        now,
        active_days: active_within / 86_400,
        active: 0,
        expired: 0,
        within_7_days: 0,
        within_30_days: 0,
        months: Vec::new(),
        later: 0,
        at_risk: Vec::new(),
    };
    for d in devices {
        if d.status == DeviceStatus::Blocked {
            continue;
        }
        let seen = last_seen(d);
        if seen.is_none_or(|t| t < now - active_within) {
            continue;
        }
        let Some(current) = d.current() else { continue };
        if current.not_after == 0 {
            continue;
        }
        f.active += 1;
        let left = current.not_after - now;
        if left <= 0 {
            f.expired += 1;
        } else {
            if left <= 7 * 86_400 {
                f.within_7_days += 1;
            }
            if left <= 30 * 86_400 {
                f.within_30_days += 1;
            }
            match months
                .iter_mut()
                .rev()
                .find(|(start, _)| current.not_after >= *start)
            {
                Some((_, m)) if current.not_after < end_of_year => m.devices += 1,
                _ => f.later += 1,
            }
        }
        if left <= AT_RISK_WITHIN {
            f.at_risk.push(AtRisk {
                id: d.id.clone(),
                status: d.status,
                fingerprint: current.fingerprint.clone(),
                subject: current.subject.clone(),
                not_after: current.not_after,
                last_seen: seen,
                label: d.label.clone(),
            });
        }
    }
    f.at_risk
        .sort_by(|a, b| a.not_after.cmp(&b.not_after).then(a.id.cmp(&b.id)));
    f.months = months.into_iter().map(|(_, m)| m).collect();
    f
}

/// The gauge values: approved devices seen in the last 30 days whose
/// current certificate (no successor yet) expires within each window.
pub(crate) fn gauge<'a>(devices: impl Iterator<Item = &'a Device>, now: i64) -> [i64; 3] {
    let mut n = [0i64; 3];
    for d in devices {
        if d.status != DeviceStatus::Approved
            || last_seen(d).is_none_or(|t| t < now - GAUGE_ACTIVE_WITHIN)
        {
            continue;
        }
        let Some(current) = d.current() else { continue };
        if current.not_after == 0 {
            continue;
        }
        for (count, window) in n.iter_mut().zip(GAUGE_WINDOWS) {
            if current.not_after <= now + window {
                *count += 1;
            }
        }
    }
    n
}

fn month_start(t: i64) -> i64 {
    let Ok(dt) = time::OffsetDateTime::from_unix_timestamp(t) else {
        return t;
    };
    dt.date()
        .replace_day(1)
        .map_or(t, |d| d.midnight().assume_utc().unix_timestamp())
}

fn next_month(start: i64) -> i64 {
    // The 1st plus 32 days is always in the next month.
    month_start(start + 32 * 86_400)
}

fn month_name(start: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(start) {
        Ok(dt) => format!("{:04}-{:02}", dt.year(), u8::from(dt.month())),
        Err(_) => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Certificate;

    fn device(id: &str, status: DeviceStatus, not_after: i64, seen: i64) -> Device {
        let mut c = Certificate::bare(format!("{id:0>64}"));
        c.not_after = not_after;
        c.last_seen = Some(seen);
        Device::of(id.into(), c, status)
    }

    #[test]
    fn devices_fall_into_windows_and_months() {
        // 2026-12-02T00:00:00Z
        let now = 1_796_169_600;
        let day = 86_400;
        let devices = [
            device("a", DeviceStatus::Approved, now + 3 * day, now),
            device("b", DeviceStatus::Approved, now + 20 * day, now),
            device("c", DeviceStatus::Pending, now + 70 * day, now - day),
            device("d", DeviceStatus::Approved, now + 500 * day, now),
            device("e", DeviceStatus::Approved, now - day, now - 2 * day),
            // Not active, blocked: not counted.
            device("f", DeviceStatus::Approved, now + 3 * day, now - 40 * day),
            device("g", DeviceStatus::Blocked, now + 3 * day, now),
        ];
        let f = forecast(devices.iter(), now, 30 * day);
        assert_eq!((f.active, f.expired), (5, 1));
        assert_eq!((f.within_7_days, f.within_30_days), (1, 2));
        assert_eq!(f.months[0].month, "2026-12");
        assert_eq!(f.months[0].devices, 2, "{f:?}");
        assert_eq!(f.months[1].month, "2027-01");
        assert_eq!(f.months[1].devices, 0);
        assert_eq!(f.months[2].devices, 1);
        assert_eq!(f.months.len(), 12);
        assert_eq!(f.later, 1);
        let risk: Vec<&str> = f.at_risk.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(risk, ["e", "a", "b"]);
        assert_eq!(gauge(devices.iter(), now), [2, 3, 3]);
    }
}
