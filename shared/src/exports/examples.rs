//! Fine-tune examples: a snapshot's messages as the turns of a chat, shaped for one target
//! (OpenAI and TRL, Amazon Bedrock Nova, Google Vertex Gemini, ShareGPT) and checked against its
//! documented rules before anything is written. The rules are in `docs/exports.md`.
//!
//! The stages, in order, for every example: merge (empty messages dropped, consecutive
//! messages of one role joined), trim (where the target wants user first and assistant last),
//! then the checks, whose first failure names the [`SkipReason`] the example is left out for.

use std::borrow::Cow;

use serde::Serialize;

pub use super::counts::{Reasons, SkipReason};
use super::spec::Format;
use crate::snapshots::SnapshotMessage;

/// Who speaks: the customer is the user; the business side (AI or human agent) the assistant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The customer.
    User,
    /// The business side.
    Assistant,
}

impl Role {
    /// Tether's `sender`: `contact` is the customer.
    pub fn of(m: &SnapshotMessage) -> Self {
        if m.sender == "contact" {
            Self::User
        } else {
            Self::Assistant
        }
    }
}

/// What a target requires of an example.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Joins consecutive messages of one role.
    pub separator: &'static str,
    /// Leading business turns (greetings) are dropped: the first turn is the customer's.
    pub user_first: bool,
    /// Trailing customer turns are dropped: the last turn is the business side's.
    pub assistant_last: bool,
    /// Strings no text may contain, compared case-insensitively.
    pub reserved: &'static [&'static str],
    /// Largest example, in estimated tokens ([`estimated_tokens`]), system prompt included.
    pub max_tokens: usize,
}

/// Bedrock's reserved strings (Nova: such a sample fails the customization job).
pub const BEDROCK_RESERVED: &[&str] =
    &["system:", "user:", "bot:", "assistant:", "thought:", "[eos]", "<image>", "<video>", "<unk>"];

/// The rules of a chat format; `None` for the formats that copy snapshots as they are.
pub fn rules(format: Format) -> Option<Rules> {
    let open =
        |max_tokens| Rules { separator: "\n\n", user_first: false, assistant_last: false, reserved: &[], max_tokens };
    match format {
        // Kept as earlier releases wrote it: messages of one role joined by one line break.
        Format::OpenAi => Some(Rules { separator: "\n", ..open(65_536) }),
        Format::ShareGpt => Some(open(131_072)),
        Format::Bedrock => Some(Rules {
            separator: "\n\n",
            user_first: true,
            assistant_last: true,
            reserved: BEDROCK_RESERVED,
            max_tokens: 32_000,
        }),
        Format::Vertex => Some(Rules { user_first: true, assistant_last: true, ..open(131_072) }),
        Format::Json | Format::Jsonl | Format::Csv => None,
    }
}

/// A documented over-estimate of tokens: one per 3 bytes of UTF-8. English runs about 4
/// characters (bytes) per token and CJK about one character (3 bytes) per token, so the bound
/// errs on leaving an example out rather than on a file the provider refuses.
pub fn estimated_tokens(text: &str) -> usize {
    text.len().div_ceil(3)
}

/// One turn of an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn<'a> {
    /// Who speaks.
    pub role: Role,
    /// The merged text.
    pub text: Cow<'a, str>,
}

/// The turns of `messages` for `rules`, or why the example is left out.
pub fn shape<'a>(
    messages: &'a [SnapshotMessage],
    system: Option<&str>,
    rules: &Rules,
) -> Result<Vec<Turn<'a>>, SkipReason> {
    let mut turns: Vec<Turn<'a>> = Vec::new();
    for m in messages.iter().filter(|m| !m.content.trim().is_empty()) {
        match turns.last_mut() {
            Some(turn) if turn.role == Role::of(m) => {
                let text = turn.text.to_mut();
                text.push_str(rules.separator);
                text.push_str(&m.content);
            }
            _ => turns.push(Turn { role: Role::of(m), text: Cow::Borrowed(&m.content) }),
        }
    }
    if turns.is_empty() {
        return Err(SkipReason::Empty);
    }
    if !turns.iter().any(|t| t.role == Role::Assistant) {
        return Err(SkipReason::NoAssistantTurn);
    }
    if rules.assistant_last {
        while turns.last().is_some_and(|t| t.role == Role::User) {
            turns.pop();
        }
    }
    if rules.user_first {
        let lead = turns.iter().take_while(|t| t.role == Role::Assistant).count();
        turns.drain(..lead);
        if turns.is_empty() {
            return Err(SkipReason::NoUserTurn);
        }
    }
    let texts = || system.into_iter().chain(turns.iter().map(|t| t.text.as_ref()));
    if !rules.reserved.is_empty() && texts().any(|text| holds_reserved(text, rules.reserved)) {
        return Err(SkipReason::ReservedText);
    }
    if texts().map(estimated_tokens).sum::<usize>() > rules.max_tokens {
        return Err(SkipReason::TooLong);
    }
    Ok(turns)
}

/// Whether `text` contains one of `reserved` (lowercase), in any case.
pub fn holds_reserved(text: &str, reserved: &[&str]) -> bool {
    let lower = text.to_lowercase();
    reserved.iter().any(|r| lower.contains(r))
}

/// The JSON line (without its line break) of an example in a chat `format`.
pub fn encode(format: Format, turns: &[Turn<'_>], system: Option<&str>) -> serde_json::Result<Vec<u8>> {
    match format {
        Format::Bedrock => serde_json::to_vec(&bedrock(turns, system)),
        Format::Vertex => serde_json::to_vec(&vertex(turns, system)),
        Format::ShareGpt => serde_json::to_vec(&sharegpt(turns, system)),
        _ => serde_json::to_vec(&openai(turns, system)),
    }
}

// OpenAI and TRL: `{"messages": [{"content", "role"}]}`, in the sorted key order of earlier releases.
#[derive(Serialize)]
struct OpenAi<'a> {
    messages: Vec<OpenAiTurn<'a>>,
}

#[derive(Serialize)]
struct OpenAiTurn<'a> {
    content: &'a str,
    role: &'static str,
}

fn openai<'a>(turns: &'a [Turn<'_>], system: Option<&'a str>) -> OpenAi<'a> {
    let system = system.map(|s| OpenAiTurn { content: s, role: "system" });
    let role = |r| if r == Role::User { "user" } else { "assistant" };
    let messages = system.into_iter().chain(turns.iter().map(|t| OpenAiTurn { content: &t.text, role: role(t.role) }));
    OpenAi { messages: messages.collect() }
}

// Bedrock (Nova): the conversation schema.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bedrock<'a> {
    schema_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<[Text<'a>; 1]>,
    messages: Vec<BedrockTurn<'a>>,
}

#[derive(Serialize)]
struct Text<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct BedrockTurn<'a> {
    role: &'static str,
    content: [Text<'a>; 1],
}

fn bedrock<'a>(turns: &'a [Turn<'_>], system: Option<&'a str>) -> Bedrock<'a> {
    let role = |r| if r == Role::User { "user" } else { "assistant" };
    Bedrock {
        schema_version: "bedrock-conversation-2024",
        system: system.map(|text| [Text { text }]),
        messages: turns.iter().map(|t| BedrockTurn { role: role(t.role), content: [Text { text: &t.text }] }).collect(),
    }
}

// Vertex (Gemini): `systemInstruction` and `contents` of user / model turns.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Vertex<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Parts<'a>>,
    contents: Vec<VertexTurn<'a>>,
}

#[derive(Serialize)]
struct Parts<'a> {
    parts: [Text<'a>; 1],
}

#[derive(Serialize)]
struct VertexTurn<'a> {
    role: &'static str,
    parts: [Text<'a>; 1],
}

fn vertex<'a>(turns: &'a [Turn<'_>], system: Option<&'a str>) -> Vertex<'a> {
    let role = |r| if r == Role::User { "user" } else { "model" };
    Vertex {
        system_instruction: system.map(|text| Parts { parts: [Text { text }] }),
        contents: turns.iter().map(|t| VertexTurn { role: role(t.role), parts: [Text { text: &t.text }] }).collect(),
    }
}

// ShareGPT: `conversations` of human / gpt turns, and `system` when given.
#[derive(Serialize)]
struct ShareGpt<'a> {
    conversations: Vec<ShareGptTurn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
}

#[derive(Serialize)]
struct ShareGptTurn<'a> {
    from: &'static str,
    value: &'a str,
}

fn sharegpt<'a>(turns: &'a [Turn<'_>], system: Option<&'a str>) -> ShareGpt<'a> {
    let from = |r| if r == Role::User { "human" } else { "gpt" };
    ShareGpt {
        conversations: turns.iter().map(|t| ShareGptTurn { from: from(t.role), value: &t.text }).collect(),
        system,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(sender: &str, content: &str) -> SnapshotMessage {
        SnapshotMessage {
            id: "m".into(),
            content: content.into(),
            sender: sender.into(),
            sender_type: "AI".into(),
            timestamp: "2026-05-18T13:00:00.000Z".into(),
        }
    }

    fn reason(format: Format, messages: &[SnapshotMessage]) -> Option<SkipReason> {
        rules(format).and_then(|r| shape(messages, None, &r).err())
    }

    #[test]
    fn bedrock_trims_greetings_and_trailing_questions_and_merges_with_a_blank_line() {
        let messages = [
            msg("user", "Hi, I'm the bot"),
            msg("contact", "price?"),
            msg("contact", "for two"),
            msg("user", "40"),
            msg("contact", "thanks"),
        ];
        let turns = shape(&messages, None, &rules(Format::Bedrock).unwrap()).unwrap();
        let line = String::from_utf8(encode(Format::Bedrock, &turns, Some("Be brief")).unwrap()).unwrap();
        assert_eq!(
            line,
            r#"{"schemaVersion":"bedrock-conversation-2024","system":[{"text":"Be brief"}],"messages":[{"role":"user","content":[{"text":"price?\n\nfor two"}]},{"role":"assistant","content":[{"text":"40"}]}]}"#
        );
        let line = String::from_utf8(encode(Format::Vertex, &turns, None).unwrap()).unwrap();
        assert_eq!(
            line,
            r#"{"contents":[{"role":"user","parts":[{"text":"price?\n\nfor two"}]},{"role":"model","parts":[{"text":"40"}]}]}"#
        );
    }

    #[test]
    fn every_reserved_string_in_any_case_is_refused_by_bedrock_only() {
        for r in ["System:", "User:", "Bot:", "Assistant:", "Thought:", "[EOS]", "<image>", "<video>", "<unk>"] {
            for written in [r.to_string(), r.to_uppercase(), r.to_lowercase()] {
                let messages = [msg("contact", "q"), msg("user", &format!("a {written} b"))];
                assert_eq!(reason(Format::Bedrock, &messages), Some(SkipReason::ReservedText), "{written}");
                assert_eq!(reason(Format::Vertex, &messages), None, "{written}");
            }
        }
    }

    #[test]
    fn each_rule_names_its_reason() {
        assert_eq!(reason(Format::Bedrock, &[msg("contact", "  ")]), Some(SkipReason::Empty));
        assert_eq!(reason(Format::ShareGpt, &[msg("contact", "hello?")]), Some(SkipReason::NoAssistantTurn));
        assert_eq!(reason(Format::Vertex, &[msg("user", "hi"), msg("contact", "?")]), Some(SkipReason::NoUserTurn));
        assert_eq!(reason(Format::OpenAi, &[msg("user", "hi"), msg("contact", "?")]), None, "OpenAI takes any order");
        let reserved = [msg("contact", "q"), msg("user", "As the ASSISTANT: yes")];
        assert_eq!(reason(Format::Bedrock, &reserved), Some(SkipReason::ReservedText));
        assert_eq!(reason(Format::Vertex, &reserved), None, "only Bedrock reserves strings");
        let long = [msg("contact", "q"), msg("user", &"x".repeat(32_000 * 3 + 1))];
        assert_eq!(reason(Format::Bedrock, &long), Some(SkipReason::TooLong));
        assert_eq!(reason(Format::Vertex, &long), None);
    }
}
