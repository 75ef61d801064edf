//! One device: its certificates, connections and refusals, label editing,
//! the actions, and its audit trail.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use maud::html;

use crate::registry::{Change, DeviceStatus};

use super::super::context::AdminContext;
use super::super::sessions::Caller;
use super::audit;
use super::devices::status_badge;
use super::form::Form;
use super::layout::{
    common_name, error_page, html_response, page as shell, query_string, see_other, when,
};

/// `GET /devices/{id}`.
pub(super) async fn page(
    ctx: &AdminContext,
    caller: &Caller,
    id: &str,
    query: &Form,
) -> Response<Full<Bytes>> {
    let Some(reg) = &ctx.registry else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No device registry",
            "This gateway has no [registry] table.",
            Some(caller),
        );
    };
    let d = match reg.get(id).await {
        Ok(Some(d)) => d.view(),
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "No such device",
                &format!("No device or certificate {id}."),
                Some(caller),
            );
        }
        Err(e) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "Device",
                &e.to_string(),
                Some(caller),
            );
        }
    };
    let trail = audit::for_device(reg, &d.id).await;
    let done = query.text("done");
    let cn = common_name(&d.subject).to_string();
    let title = format!("Device {cn}");
    let action_button = |name: &str, label: &str| {
        html! {
            button type="submit" name="action" value=(name) { (label) }
        }
    };
    let body = html! {
        @if !done.is_empty() { p.notice role="status" { (done) } }
        dl.facts {
            dt { "Status" } dd { (status_badge(d.status)) }
            dt { "Device id" } dd.mono { (d.id) }
            dt { "Subject" } dd { (d.subject) }
            dt { "Issuer" } dd { (d.issuer) }
            dt { "Serial" } dd.mono { (d.serial) }
            dt { "Fingerprint (SHA-256)" } dd.mono { (d.fingerprint) }
            dt { "Subject alternative names" } dd { (if d.sans.is_empty() { "-".to_string() } else { d.sans.join(", ") }) }
            dt { "Valid" } dd { (when(Some(d.not_before))) " to " (when(Some(d.not_after))) }
            dt { "First seen" } dd { (when(d.first_seen)) }
            dt { "Last seen" } dd { (when(d.last_seen)) " from " span.mono { (d.last_peer.as_deref().unwrap_or("-")) } }
            dt { "Connections" } dd { (d.connections) }
            dt { "Last change" } dd { (when(d.changed_at)) " by " (d.changed_by.as_deref().unwrap_or("-")) }
        }
        h2 { "Actions" }
        form method="post" action="/devices/confirm" {
            input type="hidden" name="csrf" value=(caller.csrf);
            input type="hidden" name="id" value=(d.id);
            div.actions {
                @if d.status != DeviceStatus::Approved { (action_button("approve", "Approve")) }
                @if d.status != DeviceStatus::Blocked { (action_button("block", "Block")) }
                @if d.status == DeviceStatus::Blocked { (action_button("unblock", "Unblock")) }
                button.danger type="submit" name="action" value="forget" { "Forget" }
            }
        }
        form method="post" action={"/devices/" (d.id) "/label"} {
            input type="hidden" name="csrf" value=(caller.csrf);
            label for="label" { "Label " }
            input #label type="text" name="label" value=(d.label.as_deref().unwrap_or("")) maxlength="200";
            " "
            button type="submit" { "Save label" }
        }
        h2 { "Refusals by reason" }
        @if d.refusals.is_empty() {
            p.muted { "None." }
        } @else {
            table {
                thead { tr { th scope="col" { "Reason" } th.num scope="col" { "Refusals" } } }
                tbody {
                    @for (reason, n) in &d.refusals {
                        tr { td { (reason) } td.num { (n) } }
                    }
                }
            }
        }
        h2 { "Certificates" }
        table {
            thead { tr {
                th scope="col" { "State" } th scope="col" { "Fingerprint" } th scope="col" { "Serial" }
                th scope="col" { "Valid to" } th scope="col" { "First seen" } th scope="col" { "Last seen" }
                th.num scope="col" { "Connections" }
            } }
            tbody {
                @for c in &d.certificates {
                    tr {
                        td { (c.state) }
                        td.mono { (c.certificate.fingerprint) }
                        td.mono { (c.certificate.serial) }
                        td { (when(Some(c.certificate.not_after))) }
                        td { (when(c.certificate.first_seen)) }
                        td { (when(c.certificate.last_seen)) }
                        td.num { (c.certificate.connections) }
                    }
                }
            }
        }
        h2 { "Audit trail" }
        (audit::table(&trail))
    };
    html_response(StatusCode::OK, shell(&title, "/devices", caller, body))
}

/// `POST /devices/{id}/label`.
pub(super) async fn label(
    ctx: &AdminContext,
    caller: &Caller,
    id: &str,
    form: &Form,
) -> Response<Full<Bytes>> {
    let Some(reg) = &ctx.registry else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No device registry",
            "This gateway has no [registry] table.",
            Some(caller),
        );
    };
    let text = form.text("label");
    let label = (!text.is_empty()).then(|| text.chars().take(200).collect::<String>());
    match reg
        .change(vec![id.to_string()], Change::Label(label), &caller.who)
        .await
    {
        // The id resolved to a device, so it is hex (an id or a
        // fingerprint prefix): safe in a Location.
        Ok(d) => match d.first() {
            Some(d) => see_other(&format!(
                "/devices/{}?{}",
                d.id,
                query_string(&[("done", "Label saved.")])
            )),
            None => see_other("/devices"),
        },
        Err(e) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not changed",
            &format!("Nothing was changed: {e}"),
            Some(caller),
        ),
    }
}
