//! Bounds on the sizes a user chooses, shared by the config file and the command line so that
//! train, eval, predict and tokenize accept the same values and say the same thing.

/// The most tokens (rows × `max_seq_length`) one forward pass of evaluation or prediction may
/// hold. Attention scores grow as rows × heads × length²: at this bound BERT-base at 512
/// tokens needs about 3 GB for one layer's scores, where an unbounded batch size asks the
/// allocator for terabytes and aborts the process. 256 rows of 512 tokens or 1,024 of 128
/// are far past the point where a larger batch scores faster.
pub const MAX_BATCH_TOKENS: usize = 1 << 17;

/// Fewest tokens an input may be cut to: `[CLS]`, `[SEP]` and one token of text.
pub const MIN_SEQ_LENGTH: usize = 3;

/// Checks a truncation length `value`, given as `name`, against [`MIN_SEQ_LENGTH`] and the
/// model's `max_position_embeddings` when known.
pub fn check_seq_length(
    name: &str,
    value: usize,
    max_positions: Option<usize>,
) -> Result<(), String> {
    if value < MIN_SEQ_LENGTH {
        return Err(format!(
            "{name} must leave room for [CLS], [SEP] and a token (got {value})"
        ));
    }
    match max_positions {
        Some(max) if value > max => Err(format!(
            "{name} {value} exceeds the model's max_position_embeddings {max}"
        )),
        _ => Ok(()),
    }
}

/// Checks an inference batch size `value`, given as `name`, for inputs of up to
/// `max_seq_length` tokens against [`MAX_BATCH_TOKENS`].
pub fn check_batch_tokens(name: &str, value: usize, max_seq_length: usize) -> Result<(), String> {
    let tokens = value.saturating_mul(max_seq_length);
    if tokens <= MAX_BATCH_TOKENS {
        return Ok(());
    }
    Err(format!(
        "{name} {value} with max_seq_length {max_seq_length} makes batches of up to {tokens} \
         tokens, over the limit of {MAX_BATCH_TOKENS}: use {name} {} or less",
        (MAX_BATCH_TOKENS / max_seq_length.max(1)).max(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_lengths() {
        assert!(check_seq_length("--max-seq-length", 3, Some(64)).is_ok());
        assert!(check_seq_length("--max-seq-length", 64, Some(64)).is_ok());
        assert_eq!(
            check_seq_length("--max-seq-length", 2, None).unwrap_err(),
            "--max-seq-length must leave room for [CLS], [SEP] and a token (got 2)"
        );
        assert_eq!(
            check_seq_length("--max-seq-length", 65, Some(64)).unwrap_err(),
            "--max-seq-length 65 exceeds the model's max_position_embeddings 64"
        );
    }

    #[test]
    fn batch_tokens() {
        assert!(check_batch_tokens("--batch-size", 1024, 128).is_ok());
        let e = check_batch_tokens("--batch-size", 100_000, 16).unwrap_err();
        assert!(e.contains("1600000 tokens"), "{e}");
        assert!(e.ends_with("use --batch-size 8192 or less"), "{e}");
        let e = check_batch_tokens("--batch-size", usize::MAX, 512).unwrap_err();
        assert!(e.contains("use --batch-size 256 or less"), "{e}");
    }
}
