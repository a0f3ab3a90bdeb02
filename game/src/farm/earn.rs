//! `earn {amount}`: the farm earns `amount` gold (1..=[`EARN_MAX`]); never fails.

use engine::commands::Command;
use serde::{Deserialize, Serialize};

use super::{Farm, EARN_MAX};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Earn {
    pub amount: i64,
}

impl Command<Farm> for Earn {
    const NAME: &'static str = "earn";

    fn validate(&self) -> Result<(), String> {
        if !(1..=EARN_MAX).contains(&self.amount) {
            return Err(format!("amount must be 1 to {EARN_MAX}"));
        }
        Ok(())
    }

    fn apply(&self, farm: &mut Farm) -> Result<(), String> {
        farm.gold = farm.gold.checked_add(self.amount).ok_or("gold would overflow")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earning_adds_the_amount() {
        let mut farm = Farm::new_user("1");
        Earn { amount: 50 }.apply(&mut farm).unwrap();
        assert_eq!(farm.gold, 150);
    }

    #[test]
    fn an_amount_outside_one_to_fifty_is_malformed() {
        for bad in [0, -1, 51, i64::MAX] {
            assert!(Earn { amount: bad }.validate().is_err(), "{bad}");
        }
        assert!(Earn { amount: 1 }.validate().is_ok());
        assert!(Earn { amount: 50 }.validate().is_ok());
    }
}
