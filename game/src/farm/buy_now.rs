//! `buy_now {gold}` (real-time): a real-money purchase of `gold` gold (1..=[`BUY_MAX`]),
//! applied at once, outside the queue ([`super::cs_buy_now`]); never fails.

use engine::commands::Command;
use serde::{Deserialize, Serialize};

use super::{Farm, BUY_MAX};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyNow {
    pub gold: i64,
}

impl Command<Farm> for BuyNow {
    const NAME: &'static str = "buy_now";

    fn validate(&self) -> Result<(), String> {
        if !(1..=BUY_MAX).contains(&self.gold) {
            return Err(format!("gold must be 1 to {BUY_MAX}"));
        }
        Ok(())
    }

    fn apply(&self, farm: &mut Farm) -> Result<(), String> {
        farm.gold = farm.gold.checked_add(self.gold).ok_or("gold would overflow")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purchase_adds_the_gold() {
        let mut farm = Farm::new_user("1");
        BuyNow { gold: 1000 }.apply(&mut farm).unwrap();
        assert_eq!(farm.gold, 1100);
    }

    #[test]
    fn a_purchase_outside_one_to_a_thousand_is_invalid() {
        for bad in [0, -3, BUY_MAX + 1] {
            assert!(BuyNow { gold: bad }.validate().is_err(), "{bad}");
        }
        assert!(BuyNow { gold: BUY_MAX }.validate().is_ok());
    }
}
