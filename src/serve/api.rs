//! The HTTP API's request and response bodies: text-embeddings-inference's `/predict`
//! shapes, and its error body. Requests are read with bounds applied while parsing, so a
//! batch of a million inputs is refused at the first one over the limit instead of being
//! built first.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// One input: a text or a pair of texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sequence {
    Single(String),
    Pair(String, String),
}

/// `POST /predict`'s body.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictRequest {
    pub inputs: Vec<Sequence>,
    /// `inputs` was a batch (a list of lists): the answer is a list of answers.
    pub batch: bool,
    /// Cut inputs longer than the model's maximum instead of refusing them.
    pub truncate: bool,
    /// Logits instead of probabilities.
    pub raw_scores: bool,
}

/// An error answered with TEI's body, `{"error": "...", "error_type": "..."}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_type: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.message,
            error_type: self.error_type,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response.extensions_mut().insert(ErrorType(self.error_type));
        response
    }
}

/// The `error_type` of an error response, kept for the metrics and the request log.
#[derive(Debug, Clone, Copy)]
pub struct ErrorType(pub &'static str);

/// One label's score in an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
    /// Multi-label models only: the score is at or over the label's threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicted: Option<bool>,
}

/// `POST /predict`'s answer: one list of label scores per input, sorted by score.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PredictResponse {
    Single(Vec<LabelScore>),
    Batch(Vec<Vec<LabelScore>>),
}

const FIELDS: &[&str] = &["inputs", "truncate", "raw_scores", "truncation_direction"];

/// Parses a `/predict` body, refusing more than `max_inputs` inputs.
pub fn parse_predict(body: &[u8], max_inputs: usize) -> Result<PredictRequest, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let request = RequestSeed { max_inputs }
        .deserialize(&mut deserializer)
        .and_then(|r| deserializer.end().map(|()| r))
        .map_err(|e| ApiError::validation(format!("invalid request body: {e}")))?;
    if request.inputs.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty",
            "`inputs` is an empty batch",
        ));
    }
    Ok(request)
}

struct RequestSeed {
    max_inputs: usize,
}

impl<'de> DeserializeSeed<'de> for RequestSeed {
    type Value = PredictRequest;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed {
    type Value = PredictRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with `inputs`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut inputs = None;
        let mut truncate = None;
        let mut raw_scores = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "inputs" if inputs.is_none() => {
                    inputs = Some(map.next_value_seed(InputsSeed {
                        max_inputs: self.max_inputs,
                    })?);
                }
                "truncate" if truncate.is_none() => {
                    truncate = Some(map.next_value::<Option<bool>>()?.unwrap_or(false));
                }
                "raw_scores" if raw_scores.is_none() => {
                    raw_scores = Some(map.next_value::<bool>()?);
                }
                "truncation_direction" => {
                    let direction: String = map.next_value()?;
                    if !direction.eq_ignore_ascii_case("right") {
                        return Err(de::Error::custom(format!(
                            "truncation_direction `{direction}` is not supported: inputs are \
                             cut on the right, as the model was trained"
                        )));
                    }
                }
                "inputs" | "truncate" | "raw_scores" => {
                    return Err(de::Error::custom(format!("duplicate field `{key}`")));
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        let (inputs, batch) = inputs.ok_or_else(|| de::Error::missing_field("inputs"))?;
        Ok(PredictRequest {
            inputs,
            batch,
            truncate: truncate.unwrap_or(false),
            raw_scores: raw_scores.unwrap_or(false),
        })
    }
}

/// `inputs`: `"text"`, `["text"]`, `["text", "pair"]`, or a batch `[["text"], ["a", "b"]]`.
struct InputsSeed {
    max_inputs: usize,
}

/// The first element of an `inputs` list, which tells a single input from a batch.
enum First {
    Text(String),
    Sequence(Sequence),
}

impl<'de> DeserializeSeed<'de> for InputsSeed {
    type Value = (Vec<Sequence>, bool);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed {
    type Value = (Vec<Sequence>, bool);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a string, a pair of strings [string, string], or a batch of texts and pairs \
             [[string], [string, string], ...]",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok((vec![Sequence::Single(v.to_string())], false))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok((vec![Sequence::Single(v)], false))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(first) = seq.next_element_seed(FirstSeed)? else {
            return Ok((Vec::new(), true));
        };
        match first {
            First::Text(text) => {
                let second: Option<String> = seq.next_element()?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom(
                        "a list of strings is one input, a text or a pair: it holds one or two \
                         strings (send a batch as [[\"a\"], [\"b\"]])",
                    ));
                }
                let input = match second {
                    Some(second) => Sequence::Pair(text, second),
                    None => Sequence::Single(text),
                };
                Ok((vec![input], false))
            }
            First::Sequence(sequence) => {
                let mut inputs = vec![sequence];
                while let Some(sequence) = seq.next_element_seed(SequenceSeed)? {
                    if inputs.len() == self.max_inputs {
                        return Err(de::Error::custom(format!(
                            "batch of more than {} inputs (the server's --max-client-batch-size)",
                            self.max_inputs
                        )));
                    }
                    inputs.push(sequence);
                }
                Ok((inputs, true))
            }
        }
    }
}

struct FirstSeed;

impl<'de> DeserializeSeed<'de> for FirstSeed {
    type Value = First;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstSeed {
    type Value = First;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or a list of one or two strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(First::Text(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(First::Text(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SequenceSeed.visit_seq(seq).map(First::Sequence)
    }
}

/// One input of a batch: a list of one or two strings.
struct SequenceSeed;

impl<'de> DeserializeSeed<'de> for SequenceSeed {
    type Value = Sequence;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SequenceSeed {
    type Value = Sequence;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of one or two strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let second: Option<String> = seq.next_element()?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok(match second {
            Some(second) => Sequence::Pair(first, second),
            None => Sequence::Single(first),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<PredictRequest, ApiError> {
        parse_predict(body.as_bytes(), 3)
    }

    fn single(s: &str) -> Sequence {
        Sequence::Single(s.into())
    }

    #[test]
    fn reads_every_input_shape_of_tei() {
        let r = parse(r#"{"inputs": "good"}"#).unwrap();
        assert_eq!((r.inputs, r.batch), (vec![single("good")], false));
        let r = parse(r#"{"inputs": ["good"]}"#).unwrap();
        assert_eq!((r.inputs, r.batch), (vec![single("good")], false));
        let r = parse(r#"{"inputs": ["a", "b"], "truncate": true, "raw_scores": true}"#).unwrap();
        assert_eq!(r.inputs, [Sequence::Pair("a".into(), "b".into())]);
        assert!(!r.batch && r.truncate && r.raw_scores);
        let r = parse(r#"{"inputs": [["a"], ["b", "c"]], "truncate": null}"#).unwrap();
        assert_eq!(
            r.inputs,
            [single("a"), Sequence::Pair("b".into(), "c".into())]
        );
        assert!(r.batch && !r.truncate);
    }

    #[test]
    fn refuses_what_is_not_a_request_naming_why() {
        for (body, needle) in [
            ("", "EOF"),
            ("{", "EOF"),
            ("[]", "invalid type"),
            (r#"{"inputs": 5}"#, "invalid type: integer"),
            (r#"{"inputs": [1, 2]}"#, "invalid type: integer"),
            (r#"{"inputs": {"a": 1}}"#, "invalid type: map"),
            (r#"{"inputs": ["a", "b", "c"]}"#, "one or two strings"),
            (r#"{"inputs": [["a", "b", "c"]]}"#, "invalid length 3"),
            (r#"{"inputs": [[]]}"#, "invalid length 0"),
            (r#"{"inputs": [["a"], "b"]}"#, "invalid type: string"),
            (r#"{"input": "a"}"#, "unknown field `input`"),
            (r#"{"truncate": true}"#, "missing field `inputs`"),
            (r#"{"inputs": "a", "inputs": "b"}"#, "duplicate field"),
            (
                r#"{"inputs": "a", "raw_scores": "yes"}"#,
                "invalid type: string",
            ),
            (
                r#"{"inputs": "a", "truncation_direction": "left"}"#,
                "`left`",
            ),
            (r#"{"inputs": "a"} trailing"#, "trailing characters"),
            (
                r#"{"inputs": [["a"], ["b"], ["c"], ["d"]]}"#,
                "more than 3 inputs",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
        let e = parse(r#"{"inputs": []}"#).unwrap_err();
        assert_eq!(e.error_type, "empty");
    }
}
