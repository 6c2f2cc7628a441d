//! The learning-rate schedule: linear warm-up from 0, then cosine decay to lr * min_lr_ratio
//! at the last step (nanoGPT's, with the warm-up clamped to the run: a 3-step smoke run with
//! 20 warm-up steps stays in warm-up instead of dividing by a negative decay length).

use super::TrainConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub steps: u64,
}

impl Schedule {
    pub fn from_train(t: &TrainConfig) -> Self {
        Schedule {
            lr: t.lr,
            min_lr: t.lr * t.min_lr_ratio,
            warmup_steps: t.warmup_steps,
            steps: t.steps,
        }
    }

    /// The learning rate of optimiser step `step` (1-based: the first update uses step 1).
    pub fn lr_at(&self, step: u64) -> f64 {
        let step = step.max(1);
        if step <= self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps as f64;
        }
        let decay = self.steps.saturating_sub(self.warmup_steps);
        if decay == 0 {
            return self.lr;
        }
        // 0 at the first step after warm-up, 1 at the last step.
        let progress = ((step - self.warmup_steps - 1) as f64 / (decay.max(2) - 1) as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_lr + (self.lr - self.min_lr) * cosine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schedule = Schedule {
        lr: 1e-3,
        min_lr: 1e-4,
        warmup_steps: 10,
        steps: 110,
    };

    #[test]
    fn warms_up_linearly_then_decays_to_the_floor() {
        assert!((S.lr_at(1) - 1e-4).abs() < 1e-15);
        assert!((S.lr_at(5) - 5e-4).abs() < 1e-15);
        assert_eq!(S.lr_at(10), 1e-3);
        assert_eq!(S.lr_at(11), 1e-3);
        let mid = S.lr_at(11 + 99 / 2);
        assert!(mid < 1e-3 && mid > 1e-4);
        assert!((S.lr_at(110) - 1e-4).abs() < 1e-15);
        assert!(
            (S.lr_at(500) - 1e-4).abs() < 1e-15,
            "past the end stays at the floor"
        );
        let lrs: Vec<f64> = (11..=110).map(|s| S.lr_at(s)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "monotone decay");
    }

    #[test]
    fn warmup_longer_than_the_run_stays_in_warmup() {
        let s = Schedule { steps: 3, ..S };
        assert_eq!(
            (1..=3).map(|t| s.lr_at(t)).collect::<Vec<_>>(),
            vec![1e-4, 2e-4, 3.0000000000000003e-4]
        );
        let from_config = Schedule::from_train(&TrainConfig {
            steps: 3,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            ..TrainConfig::default()
        });
        assert_eq!(from_config, s);
        let no_warmup = Schedule {
            warmup_steps: 0,
            steps: 1,
            ..S
        };
        assert_eq!(no_warmup.lr_at(1), 1e-3);
    }
}
