//! Email over SMTP. (Being written.)
