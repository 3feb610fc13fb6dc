//! The page handlers: who may see and do what, and the delete form; what each page shows is
//! gathered in [`super::content`]. Addresses put the repository name first, as it may contain slashes: `/ui/r/<name>` lists its
//! tags, `/ui/r/<name>/-/m/<digest>` shows a manifest and `/ui/r/<name>/-/delete` deletes (no
//! name component can be `-`).

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use futures::{StreamExt, TryStreamExt};

use super::content::{FETCHES_AT_ONCE, TagRow};
use super::session::{Viewer, check_form};
use super::{Error, PAGE_SIZE, Ui, views};
use crate::api::events::{Origin, request_info};
use crate::auth::{Action, Resource};
use crate::oci::{Digest, Reference, RepositoryName, Tag};

/// What a `/ui/r/` address names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Delete(&'a str),
}

impl<'a> Target<'a> {
    fn parse(rest: &'a str) -> Option<Self> {
        match rest.split_once("/-/") {
            None => Some(Self::Tags(rest.trim_end_matches('/'))),
            Some((name, "delete")) => Some(Self::Delete(name)),
            Some((name, action)) => action
                .strip_prefix("m/")
                .map(|digest| Self::Manifest(name, digest)),
        }
    }
}

/// `GET /ui/`: the repositories the visitor may pull, searched and paged.
pub async fn repositories(
    State(ui): State<Ui>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    // Anonymous visitors sign in unless they may pull somewhere. Whoever signed in sees the
    // repositories they may pull, whether or not a token of theirs would list the catalog.
    if let Some(auth) = ui.auth()
        && !viewer.signed_in()
        && auth
            .authorize(viewer.identity(), Some(&Resource::Catalog), Action::Pull)
            .is_err()
    {
        return Err(Error::SignIn {
            next: "/ui/".to_owned(),
        });
    }
    let names = ui.catalog.names(&ui.app.registry).await?;
    let search = query
        .get("q")
        .map(|q| q.trim().to_lowercase())
        .unwrap_or_default();
    let matching: Vec<&str> = names
        .iter()
        .filter(|name| ui.may(&viewer, name, Action::Pull))
        .filter(|name| name.contains(&search))
        .map(String::as_str)
        .collect();
    let paged = Paged::of(&matching, query.get("page"));
    Ok(views::repositories(&ui.page(&viewer), &search, &paged).into_response())
}

/// `GET /ui/r/…`: a repository's tags, or a manifest, or the delete confirmation.
pub async fn show(State(ui): State<Ui>, request: Request) -> Result<Response, Error> {
    let viewer = super::viewer_of(&request)?;
    let path = request.uri().path().to_owned();
    let target = target_of(&path)?;
    let query: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|q| q.0)
        .map_err(|_| Error::BadRequest("the address's query cannot be read".to_owned()))?;
    match target {
        Target::Tags(name) => {
            let name = ui.readable(&viewer, name, &path)?;
            tags(&ui, &viewer, name, &query).await
        }
        Target::Manifest(name, digest) => {
            let name = ui.readable(&viewer, name, &path)?;
            let digest: Digest = digest.parse().map_err(|_| Error::NotFound)?;
            let pull_name = format!("{}/{name}", ui.host(&request));
            let view = ui
                .manifest_view(&viewer, name, digest, query.get("tag"), pull_name)
                .await?;
            Ok(views::manifest(&ui.page(&viewer), &view).into_response())
        }
        Target::Delete(name) => {
            let name = ui.deletable(&viewer, name, &path)?;
            let reference = reference_of(&query)?;
            Ok(views::confirm_delete(&ui.page(&viewer), &name, &reference).into_response())
        }
    }
}

/// `POST /ui/r/<name>/-/delete`: deletes a tag or a manifest, as `DELETE` in the API does.
pub async fn act(State(ui): State<Ui>, request: Request) -> Result<Response, Error> {
    let viewer = super::viewer_of(&request)?;
    let path = request.uri().path().to_owned();
    let Target::Delete(name) = target_of(&path)? else {
        return Err(Error::NotFound);
    };
    let name = name.to_owned();
    let headers: HeaderMap = request.headers().clone();
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    let form = super::form(request.into_body()).await?;
    check_form(&headers, &viewer, &form)?;
    let name = ui.deletable(&viewer, &name, &path)?;
    let reference = reference_of(&form)?;
    let origin = Origin {
        request: request_info(&Method::DELETE, &headers, peer),
        actor: viewer.signed_in().then(|| viewer.name()),
    };
    ui.app.delete(&origin, &name, &reference).await?;
    tracing::info!(
        repository = %name,
        %reference,
        user = viewer.name(),
        "deleted from the web interface"
    );
    let deleted: String =
        form_urlencoded::byte_serialize(reference.to_string().as_bytes()).collect();
    Ok(Redirect::to(&format!("/ui/r/{name}?deleted={deleted}")).into_response())
}

async fn tags(
    ui: &Ui,
    viewer: &Viewer,
    name: RepositoryName,
    query: &HashMap<String, String>,
) -> Result<Response, Error> {
    let mut tags = ui.app.registry.tag_times(&name).await?;
    // Newest first, as people look for what they just pushed.
    tags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let paged = Paged::of(&tags, query.get("page"));
    let rows: Vec<Option<TagRow>> = futures::stream::iter(paged.items.iter().cloned())
        .map(|(tag, pushed)| ui.tag_row(&name, tag, pushed))
        .buffered(FETCHES_AT_ONCE)
        .try_collect()
        .await?;
    let rows: Vec<TagRow> = rows.into_iter().flatten().collect();
    // Only a reference that can exist is echoed back.
    let deleted = query
        .get("deleted")
        .filter(|deleted| deleted.parse::<Reference>().is_ok())
        .cloned();
    let may_delete = ui.may_delete(viewer, name.as_str());
    Ok(views::tags(
        &ui.page(viewer),
        &name,
        &rows,
        &paged.map(|_| ()),
        may_delete,
        deleted.as_deref(),
    )
    .into_response())
}

impl Ui {
    /// `name` as a repository the viewer may pull from; others look absent, and anonymous
    /// visitors are asked to sign in first.
    fn readable(&self, viewer: &Viewer, name: &str, path: &str) -> Result<RepositoryName, Error> {
        let name: RepositoryName = name.parse().map_err(|_| Error::NotFound)?;
        if self.may(viewer, name.as_str(), Action::Pull) {
            Ok(name)
        } else {
            Err(self.refusal(viewer, path, Error::NotFound))
        }
    }

    /// `name` as a repository the viewer may delete in now.
    fn deletable(&self, viewer: &Viewer, name: &str, path: &str) -> Result<RepositoryName, Error> {
        let name = self.readable(viewer, name, path)?;
        if !self.may(viewer, name.as_str(), Action::Delete) {
            let denied = Error::Denied(format!("you may not delete in {name}"));
            return Err(self.refusal(viewer, path, denied));
        }
        self.app.refuse_deletes()?;
        self.app.refuse_writes(Some(name.as_str()))?;
        Ok(name)
    }

    fn refusal(&self, viewer: &Viewer, path: &str, otherwise: Error) -> Error {
        if viewer.signed_in() || self.auth().is_none() {
            otherwise
        } else {
            Error::SignIn {
                next: path.to_owned(),
            }
        }
    }

    /// The registry's host as the visitor addressed it, for pull commands.
    fn host(&self, request: &Request) -> String {
        let origin = self.origin_of(request);
        origin
            .split_once("://")
            .map_or(origin.clone(), |(_, host)| host.to_owned())
    }
}

fn target_of(path: &str) -> Result<Target<'_>, Error> {
    // No name, tag or digest contains '%': refusing it closes off encoded slashes and dots.
    let rest = path.strip_prefix("/ui/r/").ok_or(Error::NotFound)?;
    if rest.contains('%') {
        return Err(Error::NotFound);
    }
    Target::parse(rest).ok_or(Error::NotFound)
}

/// The tag or manifest a delete names, from its `tag` or `digest` field.
fn reference_of(fields: &HashMap<String, String>) -> Result<Reference, Error> {
    let bad = |what: &str| Error::BadRequest(format!("{what} is not a valid reference"));
    match (fields.get("tag"), fields.get("digest")) {
        (Some(tag), None) => tag
            .parse::<Tag>()
            .map(Reference::Tag)
            .map_err(|_| bad("the tag")),
        (None, Some(digest)) => digest
            .parse::<Digest>()
            .map(Reference::Digest)
            .map_err(|_| bad("the digest")),
        _ => Err(Error::BadRequest(
            "name one tag or one digest to delete".to_owned(),
        )),
    }
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    /// 1-based.
    pub page: usize,
    pub pages: usize,
    pub total: usize,
}

impl<T: Clone> Paged<T> {
    /// Page `page` (1-based; anything unreadable is the first) of `all`.
    fn of(all: &[T], page: Option<&String>) -> Self {
        let pages = all.len().div_ceil(PAGE_SIZE).max(1);
        let page = page
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1)
            .clamp(1, pages);
        let items = all
            .iter()
            .skip((page - 1) * PAGE_SIZE)
            .take(PAGE_SIZE)
            .cloned()
            .collect();
        Self {
            items,
            page,
            pages,
            total: all.len(),
        }
    }

    fn map<U>(&self, f: impl Fn(&T) -> U) -> Paged<U> {
        Paged {
            items: self.items.iter().map(f).collect(),
            page: self.page,
            pages: self.pages,
            total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_the_repository_first() {
        assert_eq!(Target::parse("team/app"), Some(Target::Tags("team/app")));
        assert_eq!(Target::parse("team/app/"), Some(Target::Tags("team/app")));
        assert_eq!(
            Target::parse("team/app/-/m/sha256:ab"),
            Some(Target::Manifest("team/app", "sha256:ab"))
        );
        assert_eq!(
            Target::parse("team/app/-/delete"),
            Some(Target::Delete("team/app"))
        );
        assert_eq!(Target::parse("team/app/-/other"), None);
        assert!(target_of("/ui/r/team%2fapp").is_err());
    }

    #[test]
    fn a_delete_names_exactly_one_reference() {
        let fields = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert!(matches!(
            reference_of(&fields(&[("tag", "v1")])),
            Ok(Reference::Tag(_))
        ));
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(matches!(
            reference_of(&fields(&[("digest", &digest)])),
            Ok(Reference::Digest(_))
        ));
        for bad in [
            fields(&[]),
            fields(&[("tag", "v1"), ("digest", &digest)]),
            fields(&[("tag", "<script>")]),
            fields(&[("digest", "sha256:short")]),
        ] {
            assert!(reference_of(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pages_hold_a_page_size_each() {
        let all: Vec<usize> = (0..PAGE_SIZE * 2 + 3).collect();
        let page = |p: &str| Paged::of(&all, Some(&p.to_owned()));
        assert_eq!(page("1").items.len(), PAGE_SIZE);
        assert_eq!(
            page("3").items,
            vec![PAGE_SIZE * 2, PAGE_SIZE * 2 + 1, PAGE_SIZE * 2 + 2]
        );
        assert_eq!(page("3").pages, 3);
        assert_eq!(page("99").page, 3, "past the end is the last page");
        assert_eq!(page("zero").page, 1);
        assert_eq!(Paged::<usize>::of(&[], None).pages, 1);
    }
}
