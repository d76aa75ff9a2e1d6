//! A stateful tool: notes with an in-memory word index.
//!
//! Each note is written to the `notes` state namespace (durable, scoped to the session), and
//! the word index lives in the tool's memory. The index is what the host snapshots between
//! steps, so a resumed session searches without re-reading every note.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use toolhost_guest::state::Namespace;
use toolhost_guest::{Access, Capabilities, JsonSchema, Tool, ToolError, export_stateful_tool, log};

const NAMESPACE: &str = "notes";
const MAX_TITLE: usize = 200;
const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Input {
    /// Adds a note and returns its id.
    Add {
        title: String,
        body: String,
        #[serde(default)]
        tags: Vec<String>,
    },
    /// Returns one note.
    Get { id: u64 },
    /// Notes containing every word of `query` (case-insensitive), best title matches first.
    Search { query: String },
    /// All notes, newest first (titles only).
    List,
    /// Deletes a note.
    Delete { id: u64 },
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
struct Note {
    id: u64,
    title: String,
    body: String,
    tags: Vec<String>,
}

#[derive(Serialize, JsonSchema)]
struct Summary {
    id: u64,
    title: String,
}

#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
enum Output {
    Added { id: u64, notes: usize },
    Note(Note),
    Found { matches: Vec<Summary> },
    Deleted { deleted: bool },
}

/// In-memory state: snapshotted by the host as serde JSON.
#[derive(Default, Serialize, Deserialize)]
struct Notes {
    next_id: u64,
    /// id -> title, for listing without touching state.
    titles: BTreeMap<u64, String>,
    /// lowercase word -> ids of notes containing it (title, body or tags).
    index: BTreeMap<String, BTreeSet<u64>>,
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

fn note_key(id: u64) -> String {
    format!("note/{id:016}")
}

impl Notes {
    fn store() -> Namespace {
        Namespace::new(NAMESPACE)
    }

    fn load(id: u64) -> Result<Note, ToolError> {
        Self::store()
            .get_json::<Note>(&note_key(id))?
            .ok_or_else(|| ToolError::invalid_input(format!("no note with id {id}")))
    }

    fn add(&mut self, title: String, body: String, tags: Vec<String>) -> Result<Output, ToolError> {
        if title.trim().is_empty() || title.len() > MAX_TITLE {
            return Err(ToolError::invalid_input(format!("title must be 1-{MAX_TITLE} bytes")));
        }
        if body.len() > MAX_BODY {
            return Err(ToolError::invalid_input(format!("body must be at most {MAX_BODY} bytes")));
        }
        self.next_id += 1;
        let note = Note { id: self.next_id, title, body, tags };
        Self::store().set_json(&note_key(note.id), &note)?;
        let text = [note.title.as_str(), note.body.as_str()].into_iter().chain(note.tags.iter().map(String::as_str));
        for word in text.flat_map(words) {
            self.index.entry(word).or_default().insert(note.id);
        }
        self.titles.insert(note.id, note.title.clone());
        log::debug(&format!("added note {} ({} indexed words)", note.id, self.index.len()));
        Ok(Output::Added { id: note.id, notes: self.titles.len() })
    }

    fn search(&self, query: &str) -> Output {
        let mut hits: Option<BTreeSet<u64>> = None;
        for word in words(query) {
            let ids = self.index.get(&word).cloned().unwrap_or_default();
            hits = Some(match hits {
                None => ids,
                Some(acc) => acc.intersection(&ids).copied().collect(),
            });
        }
        let query_words: Vec<String> = words(query).collect();
        let mut matches: Vec<Summary> =
            hits.unwrap_or_default().into_iter().map(|id| Summary { id, title: self.titles[&id].clone() }).collect();
        // Notes whose title holds more query words rank first; ties keep id order.
        matches.sort_by_key(|s| {
            let title_words: BTreeSet<String> = words(&s.title).collect();
            std::cmp::Reverse(query_words.iter().filter(|w| title_words.contains(*w)).count())
        });
        Output::Found { matches }
    }

    fn delete(&mut self, id: u64) -> Result<Output, ToolError> {
        let deleted = Self::store().delete(&note_key(id))?;
        if self.titles.remove(&id).is_some() {
            self.index.retain(|_, ids| {
                ids.remove(&id);
                !ids.is_empty()
            });
        }
        Ok(Output::Deleted { deleted })
    }
}

impl Tool for Notes {
    type Input = Input;
    type Output = Output;
    const NAME: &'static str = "notes";
    const DESCRIPTION: &'static str =
        "Keeps notes for this session: add, get, search by words, list and delete. Notes persist across restarts.";

    fn capabilities() -> Capabilities {
        Capabilities::new().state(NAMESPACE, Access::ReadWrite)
    }

    fn call(&mut self, input: Input) -> Result<Output, ToolError> {
        match input {
            Input::Add { title, body, tags } => self.add(title, body, tags),
            Input::Get { id } => Self::load(id).map(Output::Note),
            Input::Search { query } => Ok(self.search(&query)),
            Input::List => Ok(Output::Found {
                matches: self.titles.iter().rev().map(|(&id, title)| Summary { id, title: title.clone() }).collect(),
            }),
            Input::Delete { id } => self.delete(id),
        }
    }
}

export_stateful_tool!(Notes);
