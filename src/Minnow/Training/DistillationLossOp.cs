using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// Knowledge distillation's loss over the vocabulary: per position, KL(p_teacher ‖ p_student) =
/// Σ_v p_t(v) · (log p_t(v) − log p_s(v)) with p = softmax(logits), and its gradient with respect to the student's
/// logits, p_s − p_t. Positions whose target is negative are skipped (loss 0, gradient 0), as in
/// <see cref="CrossEntropyOp"/>. Each row is computed in double, in index order, by one thread, so the result does
/// not depend on the thread count.
/// </summary>
public static unsafe class DistillationLossOp
{
    private struct Job
    {
        public float* Student;
        public float* Teacher;
        public int* Targets;
        public float* RowLoss;
        public int Vocab;
        public float Scale;
        public bool Gradient;
    }

    /// <summary>
    /// Returns Σ KL over rows with a target (summed in row order). With <paramref name="writeGradient"/>, the
    /// student's logits are replaced by <paramref name="scale"/> × (p_s − p_t). rowLoss is scratch [rows].
    /// </summary>
    public static double Compute(float* student, float* teacher, int* targets, int rows, int vocab, float* rowLoss, bool writeGradient, float scale,
        WorkerPool pool)
    {
        var job = new Job { Student = student, Teacher = teacher, Targets = targets, RowLoss = rowLoss, Vocab = vocab, Scale = scale, Gradient = writeGradient };
        pool.For(rows, 16, &Run, &job);
        double total = 0;
        for (int r = 0; r < rows; r++)
        {
            total += rowLoss[r];
        }

        return total;
    }

    private static void Run(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int v = job.Vocab;
        for (int r = start; r < end; r++)
        {
            float* s = job.Student + ((long)r * v);
            float* t = job.Teacher + ((long)r * v);
            if (job.Targets[r] < 0)
            {
                job.RowLoss[r] = 0;
                if (job.Gradient)
                {
                    new Span<float>(s, v).Clear();
                }

                continue;
            }

            var (maxS, sumS) = MaxAndSumExp(s, v);
            var (maxT, sumT) = MaxAndSumExp(t, v);
            double logZs = maxS + Math.Log(sumS), logZt = maxT + Math.Log(sumT);
            double kl = 0;
            for (int i = 0; i < v; i++)
            {
                double logPt = t[i] - logZt, logPs = s[i] - logZs;
                double pt = Math.Exp(logPt);
                kl += pt * (logPt - logPs);
                if (job.Gradient)
                {
                    s[i] = (float)(job.Scale * (Math.Exp(logPs) - pt));
                }
            }

            job.RowLoss[r] = (float)kl;
        }
    }

    private static (double Max, double SumExp) MaxAndSumExp(float* row, int v)
    {
        float max = float.NegativeInfinity;
        for (int i = 0; i < v; i++)
        {
            max = MathF.Max(max, row[i]);
        }

        double sum = 0;
        for (int i = 0; i < v; i++)
        {
            sum += Math.Exp(row[i] - max);
        }

        return (max, sum);
    }
}
