//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, paginated with `n`, `last` and `Link`.

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, Call, DistributionCode, header_value};
use crate::oci::RepositoryName;
use crate::registry::Page;

/// Pages larger than this are cut; the `Link` header leads to the rest.
const MAX_PAGE: usize = 10_000;

pub(super) async fn tags(call: Call, name: RepositoryName) -> Result<Response, ApiError> {
    if call.method != Method::GET {
        return Err(call.method_not_allowed());
    }
    let page = page(&call)?;
    let (tags, more) = call.state.registry.tags(&name, &page).await?;
    let link = next_link(&format!("/v2/{name}/tags/list"), &page, more, tags.last());
    let body = axum::Json(serde_json::json!({ "name": name.as_str(), "tags": tags }));
    Ok(with_link(body.into_response(), link))
}

pub(super) async fn catalog(call: Call) -> Result<Response, ApiError> {
    if call.method != Method::GET {
        return Err(call.method_not_allowed());
    }
    let page = page(&call)?;
    let visible = match &call.caller {
        Some(caller) => caller.catalog_filter(),
        None => Box::new(|_: &str| true),
    };
    let (repositories, more) = call.state.registry.catalog(&page, &*visible).await?;
    let link = next_link("/v2/_catalog", &page, more, repositories.last());
    let body = axum::Json(serde_json::json!({ "repositories": repositories }));
    Ok(with_link(body.into_response(), link))
}

fn page(call: &Call) -> Result<Page, ApiError> {
    let n = call
        .params
        .n
        .as_deref()
        .map(|n| {
            n.parse::<usize>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    DistributionCode::PaginationNumberInvalid,
                    "n must be a non-negative integer",
                )
            })
        })
        .transpose()?
        .map(|n| n.min(MAX_PAGE));
    Ok(Page {
        n,
        last: call.params.last.clone(),
    })
}

fn next_link(path: &str, page: &Page, more: bool, last: Option<&String>) -> Option<String> {
    let last = last.filter(|_| more)?;
    let n = page.n.unwrap_or(MAX_PAGE);
    Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""))
}

fn with_link(mut response: Response, link: Option<String>) -> Response {
    if let Some(link) = link {
        response
            .headers_mut()
            .insert(header::LINK, header_value(link));
    }
    response
}
