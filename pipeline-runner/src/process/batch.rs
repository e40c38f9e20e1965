//! How many records the process role takes from the consumer at once: the one that woke it,
//! then what is already fetched, up to `runner.batch.maxRecords` (and the free write slots),
//! never waiting for more.

/// `first`, then what `next` yields (`None`: nothing more without waiting), until the batch
/// holds `limit` records; a `limit` below 1 still takes `first`.
pub(crate) fn take_fetched<T>(
    first: T,
    limit: usize,
    mut next: impl FnMut() -> Option<T>,
) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < limit {
        match next() {
            Some(item) => batch.push(item),
            None => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use tokio::sync::mpsc;

    use super::*;

    /// A queue with `queued` items ready, as a consumer's fetch queue; taking from it never
    /// waits (`now_or_never`), as the process role takes from its consumer. Keep the sender:
    /// while it is open, an empty queue is "nothing fetched yet", not the end.
    fn fetched(queued: usize) -> (mpsc::UnboundedSender<usize>, mpsc::UnboundedReceiver<usize>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        for item in 1..=queued {
            sender.send(item).expect("the receiver is alive");
        }
        (sender, receiver)
    }

    #[test]
    fn takes_at_most_the_limit_and_leaves_the_rest_queued() {
        let (_sender, mut queue) = fetched(10);
        let batch = take_fetched(0, 4, || queue.recv().now_or_never().flatten());
        assert_eq!(batch, vec![0, 1, 2, 3]);
        let rest = take_fetched(100, 100, || queue.recv().now_or_never().flatten());
        assert_eq!(
            rest,
            vec![100, 4, 5, 6, 7, 8, 9, 10],
            "nothing lost or reordered"
        );
    }

    #[test]
    fn takes_what_is_fetched_without_waiting_for_a_full_batch() {
        let (_sender, mut queue) = fetched(2);
        let batch = take_fetched(0, 500, || queue.recv().now_or_never().flatten());
        assert_eq!(batch, vec![0, 1, 2]);
        let alone = take_fetched(3, 500, || queue.recv().now_or_never().flatten());
        assert_eq!(alone, vec![3], "an empty queue ends the batch at once");
    }

    #[test]
    fn a_limit_of_one_or_less_takes_only_the_first() {
        for limit in [0, 1] {
            let (_sender, mut queue) = fetched(5);
            let batch = take_fetched(0, limit, || queue.recv().now_or_never().flatten());
            assert_eq!(batch, vec![0], "limit {limit}");
            assert_eq!(queue.len(), 5, "nothing else taken");
        }
    }
}
