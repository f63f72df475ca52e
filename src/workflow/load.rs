//! Reading workflow files: TOML → validated [`Workflow`]. Shape errors (unknown keys, bad
//! values) come from serde with the offending value's span; cross-references (teams named by
//! rules, the name against the file stem) are checked here on spans kept for the purpose. Every
//! error is reported as `path:line: problem`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::duration;
use super::routing::Route;
use super::rules::{Condition, QualifyRule};
use super::{QuietHours, RetrySection, Team, Workflow, Workflows};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read the workflow directory: {source}", dir.display())]
    ReadDir { dir: PathBuf, source: io::Error },
    #[error("{}: no workflow files (*.toml) in the directory", dir.display())]
    NoWorkflows { dir: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        /// 1-based; `None` only for the rare parser error that carries no position.
        line: Option<usize>,
        message: String,
    },
    #[error("{}: workflow {name:?} is already defined by {}", path.display(), first.display())]
    DuplicateName {
        path: PathBuf,
        first: PathBuf,
        name: String,
    },
}

impl Workflows {
    /// Loads every `*.toml` file directly in `dir` (dotfiles, such as editor backups, are
    /// skipped), in file-name order; the first bad file stops the load.
    pub fn load_dir(dir: &Path) -> Result<Workflows, LoadError> {
        let read_dir = |source| LoadError::ReadDir {
            dir: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            if is_workflow_file(&path) {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(LoadError::NoWorkflows {
                dir: dir.to_owned(),
            });
        }
        paths.sort();
        let mut by_name = BTreeMap::<String, Workflow>::new();
        for path in paths {
            let wf = Workflow::from_file(&path)?;
            if let Some(first) = by_name.get(&wf.name) {
                return Err(LoadError::DuplicateName {
                    first: first.source.clone(),
                    name: wf.name,
                    path,
                });
            }
            by_name.insert(wf.name.clone(), wf);
        }
        Ok(Workflows { by_name })
    }
}

fn is_workflow_file(path: &Path) -> bool {
    let toml_ext = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let hidden = path
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
    toml_ext && !hidden && path.is_file()
}

impl Workflow {
    pub fn from_file(path: &Path) -> Result<Workflow, LoadError> {
        let text = fs::read_to_string(path).map_err(|source| LoadError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Workflow::parse(path, &text)
    }

    /// Parses and validates `text` as the contents of `path`; the file stem of `path` is the
    /// name the workflow must declare.
    pub fn parse(path: &Path, text: &str) -> Result<Workflow, LoadError> {
        let invalid = |span: Option<Range<usize>>, message: String| LoadError::Invalid {
            path: path.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            message,
        };
        let file: WorkflowFile =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_owned()))?;
        file.into_workflow(path, text)
            .map_err(|(span, message)| invalid(Some(span), message))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|b| **b == b'\n').count() + 1
}

/// The file shape of a workflow, with spans on the values that name other things.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowFile {
    name: Spanned<String>,
    default_team: Spanned<String>,
    #[serde(
        default = "default_dedupe_window",
        deserialize_with = "duration::zero_is_off::deserialize"
    )]
    dedupe_window: Option<Duration>,
    #[serde(default, deserialize_with = "deserialize_countries")]
    allowed_countries: Option<Vec<String>>,
    #[serde(default)]
    retry: RetrySection,
    #[serde(default)]
    quiet_hours: QuietHours,
    #[serde(default)]
    qualify: Vec<QualifyFile>,
    #[serde(default)]
    route: Vec<RouteFile>,
    teams: BTreeMap<Spanned<String>, Team>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QualifyFile {
    name: Spanned<String>,
    when: Condition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    name: Option<Spanned<String>>,
    team: Spanned<String>,
    when: Condition,
}

fn default_dedupe_window() -> Option<Duration> {
    Some(Duration::from_secs(24 * 3600))
}

fn deserialize_countries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::Error;
    let list = Vec::<String>::deserialize(d)?;
    if list.is_empty() {
        return Err(Error::custom(
            "allowed_countries is empty, which would reject every lead: remove it to allow all countries",
        ));
    }
    for (i, c) in list.iter().enumerate() {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::custom(format!(
                "{c:?} is not an ISO 3166-1 alpha-2 country code (e.g. \"US\", \"GB\")"
            )));
        }
        if list[..i].contains(c) {
            return Err(Error::custom(format!("country {c:?} is listed twice")));
        }
    }
    Ok(Some(list))
}

/// Ids show up in URLs, metric labels and command lines, so they stay plain.
fn check_id(kind: &str, id: &Spanned<String>) -> Result<(), (Range<usize>, String)> {
    let ok = !id.get_ref().is_empty()
        && id
            .get_ref()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err((
            id.span(),
            format!(
                "{kind} {:?} must be letters, digits, '_', '-' or '.'",
                id.get_ref()
            ),
        ))
    }
}

/// A second use of a rule name would make a recorded reason ambiguous.
fn check_unique<'a>(
    kind: &str,
    names: impl Iterator<Item = &'a Spanned<String>>,
    text: &str,
) -> Result<(), (Range<usize>, String)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names {
        if name.get_ref().trim().is_empty() {
            return Err((name.span(), format!("{kind} name is empty")));
        }
        if let Some(first) = seen.insert(name.get_ref(), name.span().start) {
            return Err((
                name.span(),
                format!(
                    "{kind} name {:?} is already used on line {}",
                    name.get_ref(),
                    line_of(text, first)
                ),
            ));
        }
    }
    Ok(())
}

impl WorkflowFile {
    fn into_workflow(self, path: &Path, text: &str) -> Result<Workflow, (Range<usize>, String)> {
        let stem = path.file_stem().map(|s| s.to_string_lossy());
        if stem.as_deref() != Some(self.name.get_ref().as_str()) {
            return Err((
                self.name.span(),
                format!(
                    "workflow name {:?} must equal the file name {:?}",
                    self.name.get_ref(),
                    stem.unwrap_or_default()
                ),
            ));
        }
        check_id("workflow name", &self.name)?;
        for id in self.teams.keys() {
            check_id("team id", id)?;
        }
        let team_list = || {
            let ids: Vec<&str> = self.teams.keys().map(|k| k.get_ref().as_str()).collect();
            ids.join(", ")
        };
        if !self
            .teams
            .contains_key(self.default_team.get_ref().as_str())
        {
            return Err((
                self.default_team.span(),
                format!(
                    "default_team {:?} is not a team of this workflow (teams: {})",
                    self.default_team.get_ref(),
                    team_list()
                ),
            ));
        }
        check_unique("qualify rule", self.qualify.iter().map(|q| &q.name), text)?;
        check_unique(
            "route rule",
            self.route.iter().filter_map(|r| r.name.as_ref()),
            text,
        )?;
        for (i, r) in self.route.iter().enumerate() {
            if !self.teams.contains_key(r.team.get_ref().as_str()) {
                return Err((
                    r.team.span(),
                    format!(
                        "unknown team {:?} in route rule {} (teams: {})",
                        r.team.get_ref(),
                        i + 1,
                        team_list()
                    ),
                ));
            }
        }
        Ok(Workflow {
            name: self.name.into_inner(),
            source: path.to_owned(),
            default_team: self.default_team.into_inner(),
            dedupe_window: self.dedupe_window,
            allowed_countries: self.allowed_countries,
            retry: self.retry.0,
            quiet_hours: self.quiet_hours,
            qualify: self
                .qualify
                .into_iter()
                .map(|q| QualifyRule {
                    name: q.name.into_inner(),
                    when: q.when,
                })
                .collect(),
            routes: self
                .route
                .into_iter()
                .map(|r| Route {
                    name: r.name.map(Spanned::into_inner),
                    team: r.team.into_inner(),
                    when: r.when,
                })
                .collect(),
            teams: self
                .teams
                .into_iter()
                .map(|(id, team)| (id.into_inner(), team))
                .collect(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::workflow::RetryPolicy;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn with(files: &[(&str, &str)]) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "leadflow-workflow-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let made = fs::create_dir_all(&dir).and_then(|()| {
                files
                    .iter()
                    .try_for_each(|(name, text)| fs::write(dir.join(name), text))
            });
            if let Err(e) = made {
                panic!("{}: {e}", dir.display());
            }
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const MINIMAL: &str = r#"name = "w"
default_team = "t1"

[teams.t1]
timezone = "UTC"
caller_id = "+12025550100"
agents = ["+12025550101"]
hours = { mon = ["09:00-17:00"] }
"#;

    fn load(stem: &str, text: &str) -> (TempDir, Result<Workflows, LoadError>) {
        let dir = TempDir::with(&[(&format!("{stem}.toml"), text)]);
        let result = Workflows::load_dir(&dir.0);
        (dir, result)
    }

    /// Loads `text` as `w.toml` and checks the error's line, message and full display.
    #[track_caller]
    fn refused_at(text: &str, want_line: usize, want: &str) {
        let (dir, result) = load("w", text);
        let err = match result {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        let LoadError::Invalid {
            path,
            line,
            message,
        } = &err
        else {
            panic!("unexpected error kind: {err:?}");
        };
        assert_eq!(path, &dir.0.join("w.toml"));
        assert!(message.contains(want), "message {message:?} lacks {want:?}");
        assert_eq!(*line, Some(want_line), "{message}");
        assert_eq!(
            err.to_string(),
            format!("{}:{want_line}: {message}", dir.0.join("w.toml").display())
        );
    }

    #[test]
    fn a_minimal_file_loads_with_every_default() {
        let (_dir, result) = load("w", MINIMAL);
        let wfs = match result {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(wfs.names().collect::<Vec<_>>(), ["w"]);
        let Some(w) = wfs.get("w") else {
            panic!("no workflow w")
        };
        assert_eq!(w.dedupe_window, Some(Duration::from_secs(86_400)));
        assert_eq!(w.allowed_countries, None);
        assert!(w.allows_country("FR"));
        assert_eq!(w.retry, RetryPolicy::default());
        assert_eq!(w.retry.max_attempts, 5);
        assert_eq!(w.retry.base, Duration::from_secs(1));
        assert_eq!(w.retry.max, Duration::from_secs(300));
        assert_eq!(w.quiet_hours, QuietHours::default());
        assert!(w.quiet_hours.enabled);
        assert!(w.qualify.is_empty() && w.routes.is_empty());
        assert!(wfs.get("default").is_none());
    }

    #[test]
    fn durations_and_countries_are_read() {
        let text = MINIMAL.replace(
            "default_team = \"t1\"\n",
            "default_team = \"t1\"\ndedupe_window = \"0\"\nallowed_countries = [\"US\", \"CA\"]\n\
             [retry]\nmax_attempts = 2\nbase = \"30s\"\nmax = \"1h\"\n",
        );
        let (_dir, result) = load("w", &text);
        let w = match result.map(|w| w.get("w").cloned()) {
            Ok(Some(w)) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(w.dedupe_window, None);
        assert!(w.allows_country("CA") && !w.allows_country("GB"));
        assert_eq!(
            w.retry,
            RetryPolicy {
                max_attempts: 2,
                base: Duration::from_secs(30),
                max: Duration::from_secs(3600)
            }
        );
    }

    #[test]
    fn a_misspelt_key_is_refused_with_its_line() {
        let text = MINIMAL.replace(
            "default_team",
            "default_team = \"t1\"\ndedup_window = \"1h\"\n#",
        );
        refused_at(&text, 3, "unknown field `dedup_window`");
        let text = MINIMAL.replace("agents", "agent");
        refused_at(&text, 7, "unknown field `agent`");
    }

    #[test]
    fn a_route_to_an_unknown_team_is_refused_with_its_line() {
        let text = format!(
            "{MINIMAL}
[[route]]
team = \"t1\"
when = {{ field = \"size\", equals = \"Large\" }}

[[route]]
team = \"team_9\"
when = {{ field = \"size\", equals = \"Small\" }}
"
        );
        refused_at(
            &text,
            15,
            "unknown team \"team_9\" in route rule 2 (teams: t1)",
        );
    }

    #[test]
    fn an_unknown_default_team_is_refused_with_its_line() {
        let text = MINIMAL.replace("default_team = \"t1\"", "default_team = \"t2\"");
        refused_at(
            &text,
            2,
            "default_team \"t2\" is not a team of this workflow (teams: t1)",
        );
        let text = MINIMAL.replace("default_team = \"t1\"", "");
        refused_at(&text, 1, "missing field `default_team`");
    }

    #[test]
    fn a_name_other_than_the_file_stem_is_refused_with_its_line() {
        let text = format!("# a comment\n{}", MINIMAL.replace("\"w\"", "\"sales\""));
        refused_at(
            &text,
            2,
            "workflow name \"sales\" must equal the file name \"w\"",
        );
    }

    #[test]
    fn bad_conditions_are_refused_with_their_line() {
        let rule = |when: &str| format!("{MINIMAL}\n[[qualify]]\nname = \"r\"\nwhen = {when}\n");
        refused_at(
            &rule(r#"{ field = "email", regex = "(unclosed" }"#),
            12,
            "invalid regex \"(unclosed\"",
        );
        refused_at(
            &rule(r#"{ field = "size", equals = "a", in = ["b"] }"#),
            12,
            "condition has several operators (equals, in)",
        );
        refused_at(
            &rule(
                "{ all = [\n  { field = \"a\", exists = true },\n  { field = \"b\", eq = \"x\" },\n] }",
            ),
            14,
            "unknown field `eq`",
        );
        refused_at(
            &rule(r#"{ field = "size" }"#),
            12,
            "condition has no operator",
        );
    }

    #[test]
    fn duplicate_rule_names_are_refused() {
        let text = format!(
            "{MINIMAL}
[[qualify]]
name = \"r\"
when = {{ field = \"a\", exists = true }}

[[qualify]]
name = \"r\"
when = {{ field = \"b\", exists = true }}
"
        );
        refused_at(
            &text,
            15,
            "qualify rule name \"r\" is already used on line 11",
        );
    }

    #[test]
    fn bad_team_declarations_are_refused_with_their_line() {
        let team = |from: &str, to: &str| MINIMAL.replace(from, to);
        refused_at(
            &team("\"UTC\"", "\"Mars/Olympus\""),
            5,
            "unknown time zone \"Mars/Olympus\"",
        );
        refused_at(
            &team("\"09:00-17:00\"", "\"9-5\""),
            8,
            "malformed window \"9-5\": expected \"HH:MM-HH:MM\"",
        );
        refused_at(
            &team("\"09:00-17:00\"", "\"17:00-09:00\""),
            8,
            "window \"17:00-09:00\" does not end after it starts",
        );
        refused_at(
            &team(
                "hours = { mon = [\"09:00-17:00\"] }",
                "[teams.t1.hours]\nmon = [\"09:00-12:00\"]\ntue = [\"09:00-12:00\",\n  \"11:30-17:00\"]",
            ),
            10,
            "windows 09:00-12:00 and 11:30-17:00 overlap",
        );
        refused_at(
            &team("{ mon = [\"09:00-17:00\"] }", "{ mon = [] }"),
            8,
            "no business hours",
        );
        refused_at(
            &team("hours = { mon = [\"09:00-17:00\"] }", ""),
            4,
            "missing field `hours`",
        );
        refused_at(
            &team("\"+12025550100\"", "\"2025550100\""),
            6,
            "\"2025550100\" is not an E.164 number",
        );
        refused_at(
            &team("[teams.t1]", "[teams.\"t 1\"]"),
            4,
            "team id \"t 1\" must be",
        );
    }

    #[test]
    fn bad_policies_are_refused_with_their_line() {
        let top = |extra: &str| {
            MINIMAL.replace(
                "default_team = \"t1\"\n",
                &format!("default_team = \"t1\"\n{extra}\n"),
            )
        };
        refused_at(
            &top("dedupe_window = \"24\""),
            3,
            "malformed duration \"24\"",
        );
        refused_at(
            &top("allowed_countries = [\"us\"]"),
            3,
            "\"us\" is not an ISO 3166-1",
        );
        refused_at(
            &top("allowed_countries = []"),
            3,
            "allowed_countries is empty",
        );
        refused_at(
            &top("[retry]\nbase = \"10m\"\nmax = \"5m\""),
            3,
            "retry.max (5m) is shorter than retry.base (10m)",
        );
        refused_at(
            &top("[quiet_hours]\nregions = { \"US-FL\" = \"8-20\" }"),
            4,
            "malformed window \"8-20\"",
        );
        refused_at(
            &top("[quiet_hours]\nenable = false"),
            4,
            "unknown field `enable`",
        );
    }

    #[test]
    fn syntax_errors_carry_their_line() {
        refused_at(&format!("{MINIMAL}\nroute = [\n"), 10, "");
    }

    #[test]
    fn a_directory_without_workflows_is_refused() {
        let dir = TempDir::with(&[
            ("README.md", "no workflows here"),
            (".hidden.toml", MINIMAL),
        ]);
        let err = Workflows::load_dir(&dir.0).err();
        assert!(
            matches!(err, Some(LoadError::NoWorkflows { .. })),
            "{err:?}"
        );
        let missing = dir.0.join("nope");
        let err = Workflows::load_dir(&missing).err();
        assert!(matches!(err, Some(LoadError::ReadDir { .. })), "{err:?}");
    }

    #[test]
    fn colliding_names_are_refused() {
        let dir = TempDir::with(&[("w.toml", MINIMAL), ("w.TOML", MINIMAL)]);
        match Workflows::load_dir(&dir.0) {
            Err(e @ LoadError::DuplicateName { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "{}: workflow \"w\" is already defined by {}",
                    dir.0.join("w.toml").display(),
                    dir.0.join("w.TOML").display()
                )
            ),
            other => panic!("{other:?}"),
        }
    }
}
