//! The restart policy: whether, and when, a slot whose task ended gets a new task.

use shoal_proto::v1::{RestartCondition, RestartPolicy, Task, TaskState};

/// What the restart policy says about a slot whose current task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Start a replacement now.
    Now,
    /// Start a replacement at this time (unix ns), once the restart delay has passed.
    At(i64),
    /// Leave the ended task as the slot's task.
    Never,
}

/// Decides for `ended`, the current task of a slot, which has a terminal status. `history` is every
/// task of the slot (it may include `ended`).
///
/// `max_attempts` counts restarts, as `docker service create --restart-max-attempts` does: the
/// slot's other tasks that ended within the window are the earlier attempts, so `max_attempts = 1`
/// lets the first task be replaced once.
pub fn decide(policy: &RestartPolicy, ended: &Task, history: &[&Task], now_ns: i64) -> Restart {
    let state = ended.observed_state();
    let exit_code = ended.status.as_ref().map_or(0, |s| s.exit_code);
    let failed = matches!(
        state,
        TaskState::TaskFailed | TaskState::TaskRejected | TaskState::TaskOrphaned
    ) || exit_code != 0;
    let wanted = match policy.condition() {
        RestartCondition::RestartAny => true,
        RestartCondition::RestartOnFailure => failed,
        RestartCondition::RestartNone => false,
    };
    if !wanted {
        return Restart::Never;
    }
    if policy.max_attempts > 0 {
        let earlier = history
            .iter()
            .filter(|t| t.id != ended.id && t.observed_state().is_terminal())
            .filter(|t| policy.window_ns <= 0 || now_ns - ended_at(t) <= policy.window_ns)
            .count();
        if earlier as u64 >= policy.max_attempts {
            return Restart::Never;
        }
    }
    let at = ended_at(ended).saturating_add(policy.delay_ns.max(0));
    if now_ns >= at {
        Restart::Now
    } else {
        Restart::At(at)
    }
}

/// When a task reached its current (terminal) state.
fn ended_at(task: &Task) -> i64 {
    task.status.as_ref().map_or(0, |s| s.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::v1::TaskStatus;

    const S: i64 = 1_000_000_000;

    fn ended(id: &str, state: TaskState, exit_code: i32, at: i64) -> Task {
        Task {
            id: id.into(),
            status: Some(TaskStatus {
                state: state as i32,
                exit_code,
                timestamp: at,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn policy(condition: RestartCondition, delay: i64, max: u64, window: i64) -> RestartPolicy {
        RestartPolicy {
            condition: condition as i32,
            delay_ns: delay,
            max_attempts: max,
            window_ns: window,
        }
    }

    #[test]
    fn conditions() {
        use RestartCondition::*;
        use TaskState::*;
        let now = 100 * S;
        // (condition, final state, exit code, decision)
        #[rustfmt::skip]
        let cases = [
            (RestartAny, TaskComplete, 0, Restart::Now),
            (RestartAny, TaskFailed, 1, Restart::Now),
            (RestartAny, TaskShutdown, 0, Restart::Now),
            (RestartOnFailure, TaskComplete, 0, Restart::Never),
            (RestartOnFailure, TaskShutdown, 0, Restart::Never),
            (RestartOnFailure, TaskComplete, 3, Restart::Now),
            (RestartOnFailure, TaskFailed, 1, Restart::Now),
            (RestartOnFailure, TaskRejected, 0, Restart::Now),
            (RestartOnFailure, TaskOrphaned, 0, Restart::Now),
            (RestartNone, TaskFailed, 1, Restart::Never),
            (RestartNone, TaskComplete, 0, Restart::Never),
        ];
        for (cond, state, code, want) in cases {
            let t = ended("t", state, code, now);
            let got = decide(&policy(cond, 0, 0, 0), &t, &[&t], now);
            assert_eq!(got, want, "{cond:?} {state:?} exit {code}");
        }
    }

    #[test]
    fn delay() {
        // (ended at, delay, now, decision)
        let cases = [
            (10 * S, 5 * S, 12 * S, Restart::At(15 * S)),
            (10 * S, 5 * S, 15 * S, Restart::Now),
            (10 * S, 5 * S, 20 * S, Restart::Now),
            (10 * S, 0, 10 * S, Restart::Now),
        ];
        for (at, delay, now, want) in cases {
            let t = ended("t", TaskState::TaskFailed, 1, at);
            let p = policy(RestartCondition::RestartAny, delay, 0, 0);
            assert_eq!(
                decide(&p, &t, &[&t], now),
                want,
                "ended {at} delay {delay} now {now}"
            );
        }
    }

    #[test]
    fn max_attempts_and_window() {
        let now = 100 * S;
        // (earlier ended tasks' end times, max attempts, window, decision)
        let cases: Vec<(Vec<i64>, u64, i64, Restart)> = vec![
            (vec![], 1, 0, Restart::Now),
            (vec![50 * S], 1, 0, Restart::Never),
            (vec![50 * S], 2, 0, Restart::Now),
            (vec![50 * S, 60 * S], 2, 0, Restart::Never),
            (vec![S, 2 * S, 3 * S], 0, 0, Restart::Now),
            // Only attempts inside the window count.
            (vec![10 * S, 20 * S], 1, 30 * S, Restart::Now),
            (vec![10 * S, 80 * S], 1, 30 * S, Restart::Never),
            (vec![10 * S, 80 * S], 2, 30 * S, Restart::Now),
        ];
        for (i, (earlier, max, window, want)) in cases.into_iter().enumerate() {
            let dead = ended("dead", TaskState::TaskFailed, 1, now);
            let mut slot: Vec<Task> = earlier
                .iter()
                .enumerate()
                .map(|(j, at)| ended(&format!("old{j}"), TaskState::TaskFailed, 1, *at))
                .collect();
            slot.push(dead.clone());
            let refs: Vec<&Task> = slot.iter().collect();
            let p = policy(RestartCondition::RestartAny, 0, max, window);
            assert_eq!(decide(&p, &dead, &refs, now), want, "case {i}");
        }
    }
}
