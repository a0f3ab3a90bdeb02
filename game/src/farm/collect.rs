//! `collect {building}`: the farm collects [`COLLECT_GOLD`] gold per building of that kind;
//! fails if it has none.

use engine::commands::Command;
use serde::{Deserialize, Serialize};

use super::{valid_building, Farm, COLLECT_GOLD};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collect {
    pub building: String,
}

impl Command<Farm> for Collect {
    const NAME: &'static str = "collect";

    fn validate(&self) -> Result<(), String> {
        valid_building(&self.building)
    }

    fn apply(&self, farm: &mut Farm) -> Result<(), String> {
        let count = farm.count(&self.building);
        if count == 0 {
            return Err(format!("no {} to collect from", self.building));
        }
        farm.gold = farm.gold.checked_add(COLLECT_GOLD * i64::from(count)).ok_or("gold would overflow")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collecting_yields_five_gold_per_building_of_the_kind() {
        let mut farm = Farm::new_user("1");
        farm.buildings.insert("barn".into(), 3);
        farm.buildings.insert("mill".into(), 1);
        Collect { building: "barn".into() }.apply(&mut farm).unwrap();
        assert_eq!(farm.gold, 115);
        assert_eq!(farm.count("barn"), 3, "collecting keeps the buildings");
    }

    #[test]
    fn collecting_from_a_building_the_farm_lacks_fails() {
        let mut farm = Farm::new_user("1");
        assert_eq!(
            Collect { building: "barn".into() }.apply(&mut farm),
            Err("no barn to collect from".into())
        );
        assert_eq!(farm, Farm::new_user("1"));
    }

    #[test]
    fn a_bad_building_name_is_malformed() {
        assert!(Collect { building: "b4rn".into() }.validate().is_err());
        assert!(Collect { building: "barn".into() }.validate().is_ok());
    }
}
