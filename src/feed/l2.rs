//! The venue-side copy of an L2 book that a feed keeps while it synchronises.
//!
//! The feed, not the engine, is the one that knows whether a venue's book is right:
//! it applies each venue delta here first, and a delta that would leave the book
//! crossed or negative means the feed lost track of the venue (a missed message, a
//! bad snapshot). The feed then resynchronises instead of passing the delta on, so
//! the engine never has to refuse a venue delta and never drifts from the venue.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::model::{BookDelta, Price, Size};

/// Why a delta could not be applied to a [`LocalBook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BookFault {
    #[error("negative size")]
    Negative,
    #[error("crossed book: best bid {bid:?} >= best ask {ask:?}")]
    Crossed { bid: Price, ask: Price },
}

/// Price → size per side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalBook {
    bids: BTreeMap<Reverse<Price>, Size>,
    asks: BTreeMap<Price, Size>,
}

impl LocalBook {
    /// Replaces the book with `levels` (zero sizes ignored).
    pub fn reset(&mut self, levels: &BookDelta) -> Result<(), BookFault> {
        self.clear();
        self.apply(levels)
    }

    /// Applies a delta (size zero removes a level). On a fault the book is left as
    /// changed so far: the caller must resynchronise (and clear it).
    pub fn apply(&mut self, delta: &BookDelta) -> Result<(), BookFault> {
        for &(price, size) in &delta.bids {
            if size.0 < 0 {
                return Err(BookFault::Negative);
            }
            if size.is_zero() {
                self.bids.remove(&Reverse(price));
            } else {
                self.bids.insert(Reverse(price), size);
            }
        }
        for &(price, size) in &delta.asks {
            if size.0 < 0 {
                return Err(BookFault::Negative);
            }
            if size.is_zero() {
                self.asks.remove(&price);
            } else {
                self.asks.insert(price, size);
            }
        }
        self.check()
    }

    /// Whether the book is uncrossed.
    pub fn check(&self) -> Result<(), BookFault> {
        if let (Some((bid, _)), Some((ask, _))) = (self.best_bid(), self.best_ask())
            && bid >= ask
        {
            return Err(BookFault::Crossed { bid, ask });
        }
        Ok(())
    }

    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    pub fn best_bid(&self) -> Option<(Price, Size)> {
        self.bids.iter().next().map(|(p, s)| (p.0, *s))
    }

    pub fn best_ask(&self) -> Option<(Price, Size)> {
        self.asks.iter().next().map(|(p, s)| (*p, *s))
    }

    /// Every level, best first, as a whole-book delta (for a `BookReset`).
    pub fn to_delta(&self) -> BookDelta {
        BookDelta {
            bids: self.bids.iter().map(|(p, s)| (p.0, *s)).collect(),
            asks: self.asks.iter().map(|(p, s)| (*p, *s)).collect(),
        }
    }

    pub fn depth(&self) -> (usize, usize) {
        (self.bids.len(), self.asks.len())
    }

    pub fn is_empty(&self) -> bool {
        self.bids.is_empty() && self.asks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(p: i64, s: i64) -> (Price, Size) {
        (Price(p), Size(s))
    }

    #[test]
    fn applies_removes_and_detects_crossing() {
        let mut book = LocalBook::default();
        book.reset(&BookDelta { bids: vec![lv(99, 1), lv(98, 2)], asks: vec![lv(101, 1)] }).unwrap();
        book.apply(&BookDelta { bids: vec![lv(99, 0)], asks: vec![lv(100, 3)] }).unwrap();
        assert_eq!(book.best_bid(), Some(lv(98, 2)));
        assert_eq!(book.best_ask(), Some(lv(100, 3)));
        assert!(matches!(
            book.apply(&BookDelta { bids: vec![lv(100, 1)], asks: vec![] }),
            Err(BookFault::Crossed { .. })
        ));
        assert_eq!(book.apply(&BookDelta { bids: vec![lv(90, -1)], asks: vec![] }), Err(BookFault::Negative));
    }
}
