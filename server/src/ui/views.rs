//! The HTML of every page. maud escapes whatever it interpolates, so a tag, label or annotation
//! is always text, never markup; nothing here builds HTML from strings.

use std::time::SystemTime;

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};

use super::assets;
use super::content::{ManifestView, TagRow};
use super::image::{ImageConfig, short_digest};
use super::pages::Paged;
use super::session::{LOGIN_PATH, LOGOUT_PATH};
use crate::manifest::{Descriptor, Kind};
use crate::oci::{Reference, RepositoryName};
use crate::units::human_size;

/// What every page shows of the visitor.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The signed-in user's name; `None` for anonymous visitors.
    pub user: Option<String>,
    pub csrf: String,
    /// Whether there is anyone to sign in as (access control is on).
    pub can_sign_in: bool,
}

fn page(frame: &Frame, title: &str, crumbs: &[(String, String)], body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Stowage" }
                link rel="icon" type="image/svg+xml" href=(assets::ICON);
                link rel="stylesheet" href=(assets::STYLESHEET);
                script src=(assets::SCRIPT) defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/" { "Stowage" }
                    nav.crumbs aria-label="Breadcrumbs" {
                        @for (href, label) in crumbs {
                            span.sep { "/" }
                            a href=(href) { (label) }
                        }
                    }
                    div.who {
                        @if let Some(user) = &frame.user {
                            span.user data-testid="user" { (user) }
                            form method="post" action=(LOGOUT_PATH) {
                                input type="hidden" name="csrf" value=(frame.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        } @else if frame.can_sign_in {
                            a href=(LOGIN_PATH) { "Sign in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The sign-in form, with what went wrong last time.
pub fn login(frame: &Frame, next: &str, problem: Option<&str>) -> Markup {
    page(
        frame,
        "Sign in",
        &[],
        &html! {
            section.narrow {
                h1 { "Sign in" }
                @if let Some(problem) = problem {
                    p.problem role="alert" { (problem) }
                }
                form.stack method="post" action=(LOGIN_PATH) {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    input type="hidden" name="next" value=(next);
                    label { "User name" input name="user" autocomplete="username" required; }
                    label {
                        "Password or token"
                        input name="password" type="password" autocomplete="current-password" required;
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub fn repositories(frame: &Frame, search: &str, paged: &Paged<&str>) -> Markup {
    page(
        frame,
        "Repositories",
        &[],
        &html! {
            h1 { "Repositories" }
            form.search method="get" action="/ui/" role="search" {
                input type="search" name="q" value=(search) placeholder="Search repositories"
                    aria-label="Search repositories";
                button type="submit" { "Search" }
            }
            p.count { (count(paged.total, "repository", "repositories")) @if !search.is_empty() { " matching “" (search) "”" } }
            @if paged.items.is_empty() {
                p.empty { "Nothing here yet. Push an image to see it." }
            } @else {
                ul.repositories {
                    @for name in &paged.items {
                        li { a href={ "/ui/r/" (name) } { (name) } }
                    }
                }
            }
            (pager("/ui/", &[("q", search)], paged.page, paged.pages))
        },
    )
}

pub fn tags(
    frame: &Frame,
    name: &RepositoryName,
    rows: &[TagRow],
    paged: &Paged<()>,
    may_delete: bool,
    deleted: Option<&str>,
) -> Markup {
    let base = format!("/ui/r/{name}");
    page(
        frame,
        name.as_str(),
        &[(base.clone(), name.to_string())],
        &html! {
            h1 { (name) }
            @if let Some(deleted) = deleted {
                p.notice role="status" { "Deleted " code { (deleted) } "." }
            }
            p.count { (count(paged.total, "tag", "tags")) }
            @if rows.is_empty() {
                p.empty { "No tags." }
            } @else {
                div.scroll {
                    table.tags {
                        thead { tr {
                            th { "Tag" } th { "Digest" } th { "Kind" } th.num { "Size" }
                            th { "Pushed" } th { "Pulled" } @if may_delete { th {} }
                        } }
                        tbody {
                            @for row in rows {
                                tr data-tag=(row.tag) {
                                    td data-label="Tag" { a href={ (base) "/-/m/" (row.digest) "?tag=" (row.tag) } { (row.tag) } }
                                    td data-label="Digest" { code title=(row.digest) { (short_digest(row.digest.hex())) } }
                                    td data-label="Kind" {
                                        @match &row.summary {
                                            Some(summary) if summary.kind == Kind::Index => {
                                                "index"
                                                @if !summary.platforms.is_empty() {
                                                    ul.platforms { @for platform in &summary.platforms { li { (platform) } } }
                                                }
                                            }
                                            Some(summary) => {
                                                @match &summary.artifact_type {
                                                    Some(artifact) => { (artifact) }
                                                    None => { "image" }
                                                }
                                            }
                                            None => { "unreadable" }
                                        }
                                    }
                                    td.num data-label="Size" { @if let Some(summary) = &row.summary { (human_size(summary.size)) } }
                                    td data-label="Pushed" { time datetime=(timestamp(row.pushed)) { (timestamp(row.pushed)) } }
                                    td data-label="Pulled" {
                                        @match row.pulled {
                                            Some(day) => { time datetime=(date_of(day)) { (date_of(day)) } }
                                            None => { span.muted { "never" } }
                                        }
                                    }
                                    @if may_delete {
                                        td data-label="" {
                                            @match &row.immutable {
                                                Some(rule) => { span.badge title={ "kept by the rule " (rule) } { "immutable" } }
                                                None => { a.danger href={ (base) "/-/delete?tag=" (row.tag) } { "Delete" } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (pager(&base, &[], paged.page, paged.pages))
        },
    )
}

pub fn manifest(frame: &Frame, view: &ManifestView) -> Markup {
    let base = format!("/ui/r/{}", view.name);
    let reference = match &view.tag {
        Some(tag) => format!("{}:{tag}", view.pull_name),
        None => format!("{}@{}", view.pull_name, view.digest),
    };
    let title = match &view.tag {
        Some(tag) => format!("{}:{tag}", view.name),
        None => format!("{}@{}", view.name, short_digest(view.digest.hex())),
    };
    page(
        frame,
        &title,
        &[
            (base.clone(), view.name.to_string()),
            (
                format!("{base}/-/m/{}", view.digest),
                view.tag.as_ref().map_or_else(
                    || short_digest(view.digest.hex()).to_owned(),
                    ToString::to_string,
                ),
            ),
        ],
        &html! {
            h1 { (title) }
            dl.facts {
                dt { "Digest" } dd { code data-testid="digest" { (view.digest) } }
                dt { "Media type" } dd { (view.media_type) }
                dt { "Manifest size" } dd { (human_size(view.size)) }
                @if let Some(artifact) = view.manifest.as_ref().and_then(|m| m.artifact_type.as_ref()) {
                    dt { "Artifact type" } dd { (artifact) }
                }
                @if let Some(subject) = view.manifest.as_ref().and_then(|m| m.subject.as_ref()) {
                    dt { "Refers to" } dd { a href={ (base) "/-/m/" (subject.digest) } { code { (subject.digest) } } }
                }
            }
            section.pull {
                h2 { "Pull" }
                @for command in [
                    format!("docker pull {reference}"),
                    format!("podman pull {reference}"),
                    format!("skopeo copy docker://{reference} oci:image"),
                ] {
                    div.command {
                        code { (command) }
                        button.copy type="button" data-copy=(command) hidden { "Copy" }
                    }
                }
            }
            @if let Some(manifest) = &view.manifest {
                @if manifest.kind == Kind::Index {
                    section {
                        h2 { "Platforms" }
                        div.scroll { table {
                            thead { tr { th { "Platform" } th { "Digest" } th { "Media type" } th.num { "Size" } } }
                            tbody { @for entry in &view.entries {
                                tr {
                                    td { @match &entry.platform { Some(p) => { (p) } None => { "—" } } }
                                    td { a href={ (base) "/-/m/" (entry.digest) } { code title=(entry.digest) { (short_digest(&entry.digest)) } } }
                                    td { (entry.media_type) }
                                    td.num { (human_size(entry.size)) }
                                }
                            } }
                        } }
                    }
                } @else {
                    (layers(manifest.config.as_ref(), &manifest.layers))
                }
                @if let Some(annotations) = &manifest.annotations {
                    (table_of("Annotations", "annotations", annotations.iter()))
                }
            } @else {
                p.problem { "This manifest cannot be read." }
            }
            @if let Some(config) = view.config.as_ref().filter(|c| **c != ImageConfig::default()) {
                section.config {
                    h2 { "Configuration" }
                    dl.facts {
                        @if let Some(created) = &config.created { dt { "Created" } dd { (created) } }
                        @if let (Some(os), Some(arch)) = (&config.os, &config.architecture) { dt { "Platform" } dd { (os) "/" (arch) } }
                        @if let Some(author) = &config.author { dt { "Author" } dd { (author) } }
                        @if let Some(run) = &config.config {
                            @if let Some(entrypoint) = &run.entrypoint { dt { "Entrypoint" } dd { code { (words(entrypoint)) } } }
                            @if let Some(cmd) = &run.cmd { dt { "Command" } dd { code { (words(cmd)) } } }
                            @if let Some(dir) = &run.working_dir { dt { "Working directory" } dd { code { (dir) } } }
                            @if let Some(user) = &run.user { dt { "User" } dd { code { (user) } } }
                            @if let Some(ports) = &run.exposed_ports { dt { "Ports" } dd { @for port in ports.keys() { code { (port) } " " } } }
                        }
                    }
                    @if let Some(env) = config.config.as_ref().and_then(|run| run.env.as_ref()) {
                        h3 { "Environment" }
                        ul.env { @for variable in env { li { code { (variable) } } } }
                    }
                    @if let Some(labels) = config.config.as_ref().and_then(|run| run.labels.as_ref()) {
                        (table_of("Labels", "labels", labels.iter()))
                    }
                    @if let Some(history) = &config.history {
                        h3 { "History" }
                        div.scroll { table.history {
                            thead { tr { th { "Created" } th { "Step" } } }
                            tbody { @for step in history {
                                tr class=[step.empty_layer.filter(|e| *e).map(|_| "empty")] {
                                    td { (step.created.as_deref().unwrap_or("")) }
                                    td { code { (step.created_by.as_deref().or(step.comment.as_deref()).unwrap_or("")) } }
                                }
                            } }
                        } }
                    }
                }
            }
            section.referrers {
                h2 { "Referrers" }
                @if view.referrers.is_empty() {
                    p.empty { "No signatures, SBOMs or attestations refer to this manifest." }
                }
                @for (artifact_type, referrers) in &view.referrers {
                    h3 { (artifact_type) }
                    ul { @for referrer in referrers {
                        li {
                            a href={ (base) "/-/m/" (referrer.digest) } { code { (short_digest(referrer.digest.hex())) } }
                            " " (human_size(referrer.size))
                        }
                    } }
                }
            }
            @if view.may_delete {
                section.danger-zone {
                    h2 { "Delete" }
                    @if let Some(tag) = &view.tag {
                        @match &view.immutable {
                            Some(rule) => { p { "The tag " code { (tag) } " is immutable (rule " (rule) "): it and this manifest stay." } }
                            None => { a.danger href={ (base) "/-/delete?tag=" (tag) } { "Delete tag " (tag) } " " }
                        }
                    }
                    @if view.immutable.is_none() {
                        a.danger href={ (base) "/-/delete?digest=" (view.digest) } { "Delete this manifest and its tags" }
                    }
                }
            }
        },
    )
}

/// The page that asks before deleting.
pub fn confirm_delete(frame: &Frame, name: &RepositoryName, reference: &Reference) -> Markup {
    let base = format!("/ui/r/{name}");
    let (field, value, what) = match reference {
        Reference::Tag(tag) => ("tag", tag.to_string(), format!("the tag {name}:{tag}")),
        Reference::Digest(digest) => (
            "digest",
            digest.to_string(),
            format!("the manifest {name}@{digest} and every tag that points at it"),
        ),
    };
    page(
        frame,
        "Delete",
        &[(base.clone(), name.to_string())],
        &html! {
            section.narrow {
                h1 { "Delete?" }
                p { "This deletes " strong { (what) } ". It cannot be undone here; garbage collection frees the space later." }
                form.stack method="post" action={ (base) "/-/delete" } {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    input type="hidden" name=(field) value=(value);
                    div.buttons {
                        button.danger type="submit" { "Delete" }
                        a href=(base) { "Cancel" }
                    }
                }
            }
        },
    )
}

pub fn error(status: StatusCode, message: &str) -> Markup {
    let frame = Frame {
        user: None,
        csrf: String::new(),
        can_sign_in: false,
    };
    page(
        &frame,
        status.canonical_reason().unwrap_or("Error"),
        &[],
        &html! {
            section.narrow {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.problem { (message) }
                p { a href="/ui/" { "Back to the repositories" } }
            }
        },
    )
}

fn layers(config: Option<&Descriptor>, layers: &[Descriptor]) -> Markup {
    let total: u64 = config.iter().copied().chain(layers).map(|d| d.size).sum();
    html! {
        section.layers {
            h2 { "Layers" }
            p.count { (count(layers.len(), "layer", "layers")) ", " (human_size(total)) " with the config" }
            div.scroll { table {
                thead { tr { th { "#" } th { "Digest" } th { "Media type" } th.num { "Size" } } }
                tbody {
                    @if let Some(config) = config {
                        tr.config-row {
                            td { "config" }
                            td { code title=(config.digest) { (short_digest(config.digest.hex())) } }
                            td { (config.media_type) }
                            td.num { (human_size(config.size)) }
                        }
                    }
                    @for (n, layer) in layers.iter().enumerate() {
                        tr {
                            td { (n + 1) }
                            td { code title=(layer.digest) { (short_digest(layer.digest.hex())) } }
                            td { (layer.media_type) }
                            td.num { (human_size(layer.size)) }
                        }
                    }
                }
            } }
        }
    }
}

fn table_of<'a>(
    title: &str,
    class: &str,
    entries: impl Iterator<Item = (&'a String, &'a String)>,
) -> Markup {
    html! {
        h3 { (title) }
        div.scroll { table class=(class) {
            tbody { @for (key, value) in entries {
                tr { th scope="row" { code { (key) } } td { (value) } }
            } }
        } }
    }
}

fn pager(base: &str, keep: &[(&str, &str)], page: usize, pages: usize) -> Markup {
    let link = |page: usize| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in keep.iter().filter(|(_, v)| !v.is_empty()) {
            query.append_pair(key, value);
        }
        query.append_pair("page", &page.to_string());
        format!("{base}?{}", query.finish())
    };
    html! {
        @if pages > 1 {
            nav.pager aria-label="Pages" {
                @if page > 1 { a rel="prev" href=(link(page - 1)) { "← Previous" } }
                span { "Page " (page) " of " (pages) }
                @if page < pages { a rel="next" href=(link(page + 1)) { "Next →" } }
            }
        }
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A command line as a shell would read it back.
fn words(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            if !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,".contains(&b))
            {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A day since the epoch as `YYYY-MM-DD`.
fn date_of(day: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(day * 86_400);
    let mut text = humantime::format_rfc3339_seconds(time).to_string();
    text.truncate(10);
    text
}

fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_repository_holds_is_text_not_markup() {
        let frame = Frame {
            user: Some("<b>eve</b>".into()),
            csrf: "\"><script>x</script>".into(),
            can_sign_in: true,
        };
        let html = login(&frame, "/ui/\"onmouseover=\"x", Some("<img src=x>")).into_string();
        assert!(!html.contains("<script>x"), "{html}");
        assert!(!html.contains("<img src=x>"));
        assert!(!html.contains("<b>eve"));
        assert!(html.contains("&lt;img src=x&gt;"));
        assert!(!html.contains("\"onmouseover"));
    }

    #[test]
    fn days_read_as_dates() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(20_789), "2026-12-02");
    }

    #[test]
    fn commands_quote_what_a_shell_would_split() {
        let line = words(&[
            "/bin/sh".into(),
            "-c".into(),
            "echo 'hi' > x".into(),
            String::new(),
        ]);
        assert_eq!(line, r"/bin/sh -c 'echo '\''hi'\'' > x' ''");
    }
}
