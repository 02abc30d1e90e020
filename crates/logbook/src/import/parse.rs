//! The streaming JSON reader of imports: one top-level object whose one array (`tasks`, `runs`,
//! `messages`) is visited element by element, so one element is in memory at a time.
//!
//! Owns: [`drive`] (the top-level object, its header values, its array), the byte meter that
//! caps one element's bytes and knows the line and column, and the translation of every failure
//! into [`Error::Import`] with the JSON path (`$.messages[1234].author`), line and column.
//! Must never: hold more than one element (or one header value) of the input in memory, write
//! anything, or panic on any input.

use super::formats::Format;
use crate::error::{Error, Result};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::Read;
use std::rc::Rc;

/// Where a value started in the input (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) line: u64,
    pub(crate) column: u64,
}

/// What reads the parts of the top-level object: its format takes the header values
/// ([`Format::header`]) and names the array ([`Format::ARRAY_KEY`]); the handler takes the
/// elements.
pub(crate) trait Handler {
    /// The accepted shape.
    type Format: Format;

    /// The format the header values go to.
    fn format(&mut self) -> &mut Self::Format;

    /// One element of the array, `index` from 0.
    fn element(
        &mut self,
        index: u64,
        element: <Self::Format as Format>::Element,
        path: &str,
        at: Location,
    ) -> Result<()>;
}

/// Counts the bytes, lines and columns the parser consumed; refuses to feed an element past
/// its byte limit (so a 1 GB string fails at the limit, not after it was buffered).
#[derive(Debug)]
struct Meter {
    consumed: Cell<u64>,
    line: Cell<u64>,
    column: Cell<u64>,
    element_start: Cell<Option<u64>>,
    element_bytes_max: u64,
    largest: Cell<u64>,
    exceeded: Cell<bool>,
}

impl Meter {
    fn location(&self) -> Location {
        Location {
            line: self.line.get(),
            column: self.column.get(),
        }
    }

    fn start_element(&self) {
        self.element_start.set(Some(self.consumed.get()));
    }

    fn end_element(&self) {
        if let Some(start) = self.element_start.take() {
            let bytes = self.consumed.get().saturating_sub(start);
            self.largest.set(self.largest.get().max(bytes));
        }
    }
}

struct Metered<R> {
    inner: R,
    meter: Rc<Meter>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        let meter = &self.meter;
        for &byte in buffer.get(..read).unwrap_or_default() {
            meter.consumed.set(meter.consumed.get() + 1);
            if byte == b'\n' {
                meter.line.set(meter.line.get() + 1);
                meter.column.set(0);
            } else {
                meter.column.set(meter.column.get() + 1);
            }
        }
        if let Some(start) = meter.element_start.get()
            && meter.consumed.get().saturating_sub(start) > meter.element_bytes_max
        {
            meter.exceeded.set(true);
            return Err(std::io::Error::other("element over the size limit"));
        }
        Ok(read)
    }
}

/// The state the visitors share: where the parser is, and the first failure of a handler.
struct State<'h, H> {
    handler: RefCell<&'h mut H>,
    meter: Rc<Meter>,
    path: RefCell<String>,
    inner_path: RefCell<Option<String>>,
    failure: RefCell<Option<Error>>,
    element_at: Cell<Location>,
}

impl<H> State<'_, H> {
    /// Keeps a handler's error (the first one) and gives serde a placeholder to unwind with.
    fn fail<E: de::Error>(&self, error: Error) -> E {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(error);
        }
        E::custom("import stopped")
    }
}

/// Reads `input` (one JSON document) through `handler`; `element_bytes_max` caps one element
/// and one header value. Returns the largest element's bytes.
pub(crate) fn drive<H: Handler>(
    input: impl Read,
    handler: &mut H,
    element_bytes_max: u64,
) -> Result<u64> {
    let meter = Rc::new(Meter {
        consumed: Cell::new(0),
        line: Cell::new(1),
        column: Cell::new(0),
        element_start: Cell::new(None),
        element_bytes_max,
        largest: Cell::new(0),
        exceeded: Cell::new(false),
    });
    let reader = Metered {
        inner: input,
        meter: meter.clone(),
    };
    let state = State {
        handler: RefCell::new(handler),
        meter: meter.clone(),
        path: RefCell::new("$".to_owned()),
        inner_path: RefCell::new(None),
        failure: RefCell::new(None),
        element_at: Cell::new(meter.location()),
    };
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let parsed = de::Deserializer::deserialize_map(&mut deserializer, Top(&state))
        .and_then(|()| deserializer.end());
    if let Some(error) = state.failure.borrow_mut().take() {
        return Err(error);
    }
    match parsed {
        Ok(()) => Ok(meter.largest.get()),
        Err(error) => Err(translate(&state, &error)),
    }
}

/// A serde_json error as an import error: the path where the parser was, the line and column.
fn translate<H>(state: &State<'_, H>, error: &serde_json::Error) -> Error {
    let mut path = state.path.borrow().clone();
    let location = state.meter.location();
    if state.meter.exceeded.get() {
        return Error::Import {
            path,
            line: location.line,
            column: location.column,
            reason: format!(
                "larger than {} bytes (the limit of one element)",
                state.meter.element_bytes_max
            ),
        };
    }
    let text = error.to_string();
    let reason = text
        .rfind(" at line ")
        .and_then(|cut| text.get(..cut))
        .unwrap_or(&text)
        .to_owned();
    // serde_path_to_error writes `?` for a place it cannot name (the parser stopped between
    // keys): the path ends before it.
    let inner = state.inner_path.borrow().as_deref().map(|inner| {
        let known = inner.split_once('?').map_or(inner, |(before, _)| before);
        known.trim_end_matches('.').to_owned()
    });
    if let Some(inner) = inner.as_deref()
        && !inner.is_empty()
        && inner != "."
    {
        if !inner.starts_with('[') {
            path.push('.');
        }
        path.push_str(inner);
    }
    // serde names a missing field in its message only: put it in the path too.
    if let Some(field) = reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path.push('.');
        path.push_str(field);
    }
    let (line, column) = match error.line() {
        0 => (location.line, location.column),
        line => (line as u64, error.column() as u64),
    };
    Error::Import {
        path,
        line,
        column,
        reason,
    }
}

struct Top<'s, 'h, H>(&'s State<'h, H>);

impl<'de, H: Handler> Visitor<'de> for Top<'_, '_, H> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let state = self.0;
        let array_key = H::Format::ARRAY_KEY;
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = format!("$.{key}");
            if seen.contains(&key) {
                let error = import_error(&path, state.meter.location(), "duplicate key");
                return Err(state.fail(error));
            }
            // The header keys are few (a format knows at most a dozen): an unknown one stops
            // the import in `header` before this list can grow.
            seen.push(key.clone());
            *state.path.borrow_mut() = path.clone();
            if key == array_key {
                map.next_value_seed(Array(state))?;
            } else {
                state.meter.start_element();
                let at = state.meter.location();
                let value = map.next_value::<serde_json::Value>()?;
                state.meter.end_element();
                let handled = state
                    .handler
                    .borrow_mut()
                    .format()
                    .header(&key, value, &path, at);
                if let Err(error) = handled {
                    return Err(state.fail(error));
                }
            }
            *state.path.borrow_mut() = "$".to_owned();
        }
        if !seen.iter().any(|key| key == array_key) {
            let path = format!("$.{array_key}");
            let error = import_error(&path, state.meter.location(), "missing");
            return Err(state.fail(error));
        }
        Ok(())
    }
}

/// An [`Error::Import`] for `path` at `location`.
pub(crate) fn import_error(path: &str, location: Location, reason: &str) -> Error {
    Error::Import {
        path: path.to_owned(),
        line: location.line,
        column: location.column,
        reason: reason.to_owned(),
    }
}

struct Array<'s, 'h, H>(&'s State<'h, H>);

impl<'de, H: Handler> DeserializeSeed<'de> for Array<'_, '_, H> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, H: Handler> Visitor<'de> for Array<'_, '_, H> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let state = self.0;
        let array_path = state.path.borrow().clone();
        let mut index = 0u64;
        loop {
            let path = format!("{array_path}[{index}]");
            *state.path.borrow_mut() = path.clone();
            state.meter.start_element();
            let Some(element) = seq.next_element_seed(Element::<H>(state, Default::default()))?
            else {
                break;
            };
            state.meter.end_element();
            let at = state.element_at.get();
            let handled = state
                .handler
                .borrow_mut()
                .element(index, element, &path, at);
            if let Err(error) = handled {
                return Err(state.fail(error));
            }
            index += 1;
        }
        state.meter.element_start.set(None);
        *state.path.borrow_mut() = array_path;
        Ok(())
    }
}

struct Element<'s, 'h, H>(&'s State<'h, H>, std::marker::PhantomData<fn() -> H>);

impl<'de, H: Handler> DeserializeSeed<'de> for Element<'_, '_, H> {
    type Value = <H::Format as Format>::Element;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        // The parser has read the element's first byte: its line and column.
        self.0.element_at.set(self.0.meter.location());
        serde_path_to_error::deserialize(d).map_err(|error| {
            *self.0.inner_path.borrow_mut() = Some(error.path().to_string());
            error.into_inner()
        })
    }
}
