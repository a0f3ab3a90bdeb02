//! `sell {building}`: the farm sells one building of that kind for [`SELL_REFUND`] gold;
//! fails if it has none.

use engine::commands::Command;
use serde::{Deserialize, Serialize};

use super::{valid_building, Farm, SELL_REFUND};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sell {
    pub building: String,
}

impl Command<Farm> for Sell {
    const NAME: &'static str = "sell";

    fn validate(&self) -> Result<(), String> {
        valid_building(&self.building)
    }

    fn apply(&self, farm: &mut Farm) -> Result<(), String> {
        let count = farm.count(&self.building);
        if count == 0 {
            return Err(format!("no {} to sell", self.building));
        }
        if count == 1 {
            farm.buildings.remove(&self.building);
        } else {
            farm.buildings.insert(self.building.clone(), count - 1);
        }
        farm.gold = farm.gold.checked_add(SELL_REFUND).ok_or("gold would overflow")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selling_removes_one_building_and_refunds_ten_gold() {
        let mut farm = Farm::new_user("1");
        farm.buildings.insert("barn".into(), 2);
        let sell = Sell { building: "barn".into() };
        sell.apply(&mut farm).unwrap();
        assert_eq!((farm.gold, farm.count("barn")), (110, 1));
        sell.apply(&mut farm).unwrap();
        assert_eq!(farm.gold, 120);
        assert!(farm.buildings.is_empty(), "the last one sold leaves no entry");
    }

    #[test]
    fn selling_a_building_the_farm_lacks_fails() {
        let mut farm = Farm::new_user("1");
        assert_eq!(Sell { building: "barn".into() }.apply(&mut farm), Err("no barn to sell".into()));
        assert_eq!(farm.gold, 100);
    }

    #[test]
    fn a_bad_building_name_is_malformed() {
        assert!(Sell { building: String::new() }.validate().is_err());
    }
}
