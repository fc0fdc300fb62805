using Minnow.Kernels;
using Minnow.Tensors;

namespace Minnow.Training;

/// <summary>
/// y = (x − mean) / sqrt(var + eps) · w + b per row (forward by <see cref="LayerNorm"/>, so training and inference
/// normalise identically), and its gradient.
/// </summary>
public static unsafe class LayerNormOp
{
    private struct Job
    {
        public float* X;
        public float* Weight;
        public float* Bias;
        public float* Y;
        public float* DY;
        public float* DX;
        public float* DWeight;
        public float* DBias;
        public float* Mean;
        public float* Rstd;
        public int Rows;
        public int Dim;
        public float Eps;
    }

    public static void Forward(float* x, float* weight, float* bias, float* y, int rows, int dim, float eps, WorkerPool pool)
    {
        var job = new Job { X = x, Weight = weight, Bias = bias, Y = y, Rows = rows, Dim = dim, Eps = eps };
        pool.For(rows, 32, &ForwardRows, &job);
    }

    /// <summary>
    /// dx += ∂L/∂x (added, as x is the residual stream), dWeight += ∂L/∂w and dBias += ∂L/∂b (each skipped when
    /// null: a frozen parameter), given dy. <paramref name="mean"/> and <paramref name="rstd"/> are scratch for
    /// <paramref name="rows"/> floats each.
    /// </summary>
    public static void Backward(float* x, float* weight, float* dy, float* dx, float* dWeight, float* dBias, float* mean, float* rstd,
        int rows, int dim, float eps, WorkerPool pool)
    {
        var job = new Job
        {
            X = x,
            Weight = weight,
            DY = dy,
            DX = dx,
            DWeight = dWeight,
            DBias = dBias,
            Mean = mean,
            Rstd = rstd,
            Rows = rows,
            Dim = dim,
            Eps = eps,
        };
        pool.For(rows, 32, &BackwardRows, &job);
        if (dWeight != null || dBias != null)
        {
            pool.For((dim + 31) / 32, 1, &ParameterGradients, &job);
        }
    }

    private static void ForwardRows(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        for (int r = start; r < end; r++)
        {
            long o = (long)r * job.Dim;
            LayerNorm.Compute(job.X + o, job.Weight, job.Bias, job.Y + o, job.Dim, job.Eps);
        }
    }

    // x̂ = (x − μ)·r, y = x̂·w + b  ⇒  dx = r·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w.
    private static void BackwardRows(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int n = job.Dim;
        for (int r = start; r < end; r++)
        {
            float* x = job.X + ((long)r * n);
            float* dy = job.DY + ((long)r * n);
            float* dx = job.DX + ((long)r * n);

            // Mean and variance as the forward kernel forms them (double sums, float mean).
            double sum = 0;
            for (int i = 0; i < n; i++)
            {
                sum += x[i];
            }

            float mean = (float)(sum / n);
            double sumSquares = 0;
            for (int i = 0; i < n; i++)
            {
                double centred = x[i] - mean;
                sumSquares += centred * centred;
            }

            float rs = 1f / MathF.Sqrt((float)(sumSquares / n) + job.Eps);
            job.Mean[r] = mean;
            job.Rstd[r] = rs;
            double sumG = 0, sumGXhat = 0;
            for (int i = 0; i < n; i++)
            {
                double g = dy[i] * job.Weight[i];
                sumG += g;
                sumGXhat += g * (x[i] - mean) * rs;
            }

            float meanG = (float)(sumG / n), meanGXhat = (float)(sumGXhat / n);
            for (int i = 0; i < n; i++)
            {
                float xhat = (x[i] - mean) * rs;
                dx[i] += rs * ((dy[i] * job.Weight[i]) - meanG - (xhat * meanGXhat));
            }
        }
    }

    private static void ParameterGradients(void* context, int start, int end)
    {
        ref Job job = ref *(Job*)context;
        int c0 = start * 32, c1 = Math.Min(job.Dim, end * 32);
        for (int c = c0; c < c1; c++)
        {
            float sumWeight = 0, sumBias = 0;
            for (int r = 0; r < job.Rows; r++)
            {
                long o = ((long)r * job.Dim) + c;
                sumWeight += job.DY[o] * (job.X[o] - job.Mean[r]) * job.Rstd[r];
                sumBias += job.DY[o];
            }

            if (job.DWeight != null)
            {
                job.DWeight[c] += sumWeight;
            }

            if (job.DBias != null)
            {
                job.DBias[c] += sumBias;
            }
        }
    }
}
