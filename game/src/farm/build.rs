//! `build {building, cost}`: the farm pays `cost` gold (1..=[`COST_MAX`]) for one more
//! `building`; fails if it has less gold than that (the seed's cheating client: it "threw
//! money to himself" and built what it cannot afford).

use engine::commands::Command;
use serde::{Deserialize, Serialize};

use super::{valid_building, Farm, COST_MAX};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub building: String,
    pub cost: i64,
}

impl Command<Farm> for Build {
    const NAME: &'static str = "build";

    fn validate(&self) -> Result<(), String> {
        valid_building(&self.building)?;
        if !(1..=COST_MAX).contains(&self.cost) {
            return Err(format!("cost must be 1 to {COST_MAX}"));
        }
        Ok(())
    }

    fn apply(&self, farm: &mut Farm) -> Result<(), String> {
        if farm.gold < self.cost {
            return Err(format!("not enough gold: {} < {}", farm.gold, self.cost));
        }
        let count = farm.count(&self.building).checked_add(1).ok_or("too many buildings")?;
        farm.gold -= self.cost;
        farm.buildings.insert(self.building.clone(), count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(building: &str, cost: i64) -> Build {
        Build { building: building.into(), cost }
    }

    #[test]
    fn building_pays_the_cost_and_adds_one_building() {
        let mut farm = Farm::new_user("1");
        build("barn", 40).apply(&mut farm).unwrap();
        build("barn", 60).apply(&mut farm).unwrap();
        assert_eq!((farm.gold, farm.count("barn")), (0, 2));
    }

    #[test]
    fn building_what_the_farm_cannot_afford_fails_and_changes_nothing() {
        let mut farm = Farm::new_user("1");
        let why = build("mill", 101).apply(&mut farm).unwrap_err();
        assert_eq!(why, "not enough gold: 100 < 101");
        assert_eq!(farm, Farm::new_user("1"));
    }

    #[test]
    fn a_bad_name_or_cost_is_malformed() {
        assert!(build("barn", 1).validate().is_ok());
        assert!(build("barn", COST_MAX).validate().is_ok());
        for (name, cost) in [("barn", 0), ("barn", COST_MAX + 1), ("barn", -5), ("", 5), ("Barn", 5)] {
            assert!(build(name, cost).validate().is_err(), "{name:?} {cost}");
        }
    }
}
